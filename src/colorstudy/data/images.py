"""Decode one photo file into square uint8 RGB training images, or say why not.

Policy, in order (every step is deterministic for a given file and params):

1. **Read.** Zero-byte files, files PIL cannot identify (a text file named ``.jpg``)
   and headers declaring more than ``max_pixels`` pixels (decompression bombs) are
   rejected before any pixel is decoded. The shorter side must be at least
   ``min_side`` or the photo is rejected as ``too_small``.
2. **Decode fully.** ``Image.load()`` forces the whole file through the decoder, so a
   truncated file is rejected as ``truncated`` rather than silently padded with gray
   (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off). A JPEG larger than needed is
   decoded at a reduced DCT scale (``draft``), never below what the crops need.
3. **Orient.** The EXIF orientation tag is applied (``ImageOps.exif_transpose``), so a
   phone photo stored sideways trains the model upright.
4. **To RGB.** Palette images go through RGBA; any alpha is composited on white;
   CMYK is converted by PIL; 16-bit grayscale is scaled to 8 bits. A photo stored in a
   grayscale mode (``1``, ``L``, ``LA``, ``I``, ``I;16``) is flagged ``gray_mode`` and
   later excluded: it carries no color to learn.
5. **Square.** ``crops == 1``: the shorter side is resized to ``image_size`` with
   Lanczos and the center square kept (done as one resize of the center square; an
   exact-size square is cropped without resampling). ``crops > 1`` (the tiny built-in
   sample set): ``crops`` squares of random size (50–100 % of the shorter side) at
   random positions, from a generator seeded by ``crop_seed(group, path, seed)``, each
   resized to ``image_size``. Photos smaller than ``image_size`` (but at least
   ``min_side``) are upsampled.

Grayscale and monochrome *detection* by color content needs the Lab image, which the
shard writer computes in batches; :func:`color_stats` measures each resized image and
:func:`color_verdict` judges it. Mean chroma alone cannot do this: a muted color photo
(an ibex on rocks, a black car) has a low mean but a few genuinely colored regions,
while a sepia or cyanotype print has plenty of chroma, all of one hue, and teaches a
tint. So the test asks how many pixels are colored, then how far their hues spread.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

REJECT_REASONS: tuple[str, ...] = (
    "missing", "empty", "unreadable", "decompression_bomb", "too_small", "truncated", "corrupt",
    "unsupported_mode",
)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Orientations 5-8 are transposes/quarter turns: width and height swap.
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
MIN_CROP_FRACTION = 0.5  # smallest random crop of a `crops > 1` photo, as a share of its shorter side


@dataclass(frozen=True)
class Reject:
    reason: str  # one of REJECT_REASONS
    detail: str


@dataclass(frozen=True)
class DecodedImage:
    crops: list[np.ndarray]  # uint8 [image_size, image_size, 3] each
    width: int  # of the full photo, after EXIF orientation
    height: int
    gray_mode: bool  # stored in a grayscale mode
    file_sha256: str
    pixel_sha256: str  # of the decoded, oriented RGB pixels (catches re-wrapped copies)


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def crop_seed(group: str, path: str, seed: int) -> int:
    """Seed for a photo's random crops: stable across runs, machines and Python hash salts."""
    digest = hashlib.sha256(f"{seed}\0{group}\0{path}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class ColorStats:
    """Per image, float64 ``[N]``: what :func:`color_verdict` judges."""

    mean_chroma: np.ndarray  # mean Lab chroma sqrt(a^2 + b^2), the manifest's `colorfulness`
    color_fraction: np.ndarray  # share of pixels with chroma >= color_chroma
    hue_concentration: np.ndarray  # resultant length of the colored pixels' unit hue vectors (1 = one hue; 0 if none)


def color_stats(ab: np.ndarray, color_chroma: float) -> ColorStats:
    """:class:`ColorStats` of ``ab`` ``[N, 2, H, W]`` (Lab units).

    Only exact float64 operations (no atan2: the hue enters as the unit vector
    ``(a, b) / chroma``) and numpy's pairwise sums over contiguous rows: the same values
    on every machine, because they decide which crops the shards keep.
    """
    a = ab[:, 0].astype(np.float64).reshape(len(ab), -1)
    b = ab[:, 1].astype(np.float64).reshape(len(ab), -1)
    chroma = np.sqrt(a * a + b * b)
    colored = chroma >= color_chroma
    count = colored.sum(axis=1)
    safe = np.where(colored, chroma, 1.0)
    cos = np.where(colored, a / safe, 0.0).sum(axis=1)
    sin = np.where(colored, b / safe, 0.0).sum(axis=1)
    concentration = np.sqrt(cos * cos + sin * sin) / np.maximum(count, 1)
    return ColorStats(chroma.sum(axis=1) / a.shape[1], count / a.shape[1], concentration)


def color_verdict(stats: ColorStats, k: int, *, color_chroma: float, min_color_fraction: float,
                  min_hue_spread: float) -> tuple[str, str] | None:
    """``(reason, detail)`` when image ``k`` carries no color to learn, else None.

    ``grayscale``: fewer than ``min_color_fraction`` of its pixels reach chroma
    ``color_chroma``. ``monochrome``: its colored pixels' hues have a circular standard
    deviation ``sqrt(-2 ln R)`` below ``min_hue_spread`` degrees (R: hue concentration),
    one tint everywhere, as in a toned print. Measured at 64 px: toned versions of the
    shared faces and flowers spread 0.9-1.0° (uint8 rounding), the least-spread real
    face 4.3°, flower 4.3°; a 10 %-desaturated photo has no pixel at chroma 12.
    """
    fraction = float(stats.color_fraction[k])
    if fraction < min_color_fraction:
        return "grayscale", (f"{100 * fraction:.2f} % of pixels at chroma >= {color_chroma:g} "
                             f"(need {100 * min_color_fraction:g} %)")
    # circular std < spread  <=>  R > exp(-spread^2 / 2), spread in radians
    concentration = float(stats.hue_concentration[k])
    if concentration > math.exp(-math.radians(min_hue_spread) ** 2 / 2):
        spread = math.degrees(math.sqrt(-2 * math.log(concentration))) if concentration < 1 else 0.0
        return "monochrome", (f"one hue: the colored pixels' hue spread {spread:.2f}° < min_hue_spread "
                              f"{min_hue_spread:g}° (a toned print)")
    return None


def decode_image(
    path: str | Path,
    *,
    image_size: int,
    min_side: int,
    max_pixels: int,
    crops: int = 1,
    seed: int = 0,
) -> DecodedImage | Reject:
    """Decode ``path`` into ``crops`` squares of ``image_size`` pixels (policy: module docstring).

    Never raises for a bad file: every failure comes back as a :class:`Reject`.
    ``seed`` only matters for ``crops > 1`` (see :func:`crop_seed`).
    """
    try:
        return _decode(Path(path), image_size, min_side, max_pixels, crops, seed)
    except _Rejected as r:
        return Reject(r.reason, r.detail)
    except Exception as e:  # noqa: BLE001 - one bad file must never stop a preprocessing run
        return Reject("corrupt", f"{type(e).__name__}: {e}")


def _decode(path: Path, image_size: int, min_side: int, max_pixels: int, crops: int, seed: int) -> DecodedImage:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise _Rejected("missing", str(e)) from e
    if not data:
        raise _Rejected("empty", "zero-byte file")
    im = _open(data, max_pixels)
    with im:
        w, h = im.size
        if min(w, h) < min_side:
            raise _Rejected("too_small", f"{w}x{h}, shorter side < min_side {min_side}")
        if im.format == "JPEG":
            # Draft only scales by 1/2, 1/4, 1/8 and keeps both sides >= the request, so the
            # smallest crop still has at least `image_size` source pixels.
            need = math.ceil(image_size / (MIN_CROP_FRACTION if crops > 1 else 1.0))
            im.draft(None, (need, need))
        try:
            im.load()
        except OSError as e:
            reason = "truncated" if "truncat" in str(e).lower() else "corrupt"
            raise _Rejected(reason, str(e)) from e
        # read after load(): a PNG may keep its EXIF chunk after the pixel data
        if im.getexif().get(ExifTags.Base.Orientation, 1) in _SWAPPING_ORIENTATIONS:
            w, h = h, w
        oriented = ImageOps.exif_transpose(im)
        gray = oriented.mode in GRAY_MODES
        rgb = _to_rgb(oriented)
    pixels = np.asarray(rgb)
    pixel_hash = hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
    squares = (
        [_center_square(rgb, image_size)] if crops == 1
        else _random_squares(rgb, image_size, crops, seed)
    )
    return DecodedImage(squares, w, h, gray, hashlib.sha256(data).hexdigest(), pixel_hash)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; a bomb must be a reject either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Rejected("decompression_bomb", str(e)) from e
    except UnidentifiedImageError as e:
        raise _Rejected("unreadable", "not an image PIL can identify") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise _Rejected("unreadable", f"{type(e).__name__}: {e}") from e
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise _Rejected("decompression_bomb", f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(im).astype(np.float32)
        im = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")  # resolves palette transparency into alpha
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("1", "L", "CMYK", "YCbCr"):
        return im.convert("RGB")
    raise _Rejected("unsupported_mode", f"PIL mode {mode}")


def _resize_box(im: Image.Image, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    if box[2] - box[0] == size and box[3] - box[1] == size:
        return np.asarray(im.crop(box))
    # reducing_gap: a cheap integer box-reduce first, Lanczos for the last factor of <= 3
    return np.asarray(im.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0))


def _center_square(im: Image.Image, size: int) -> np.ndarray:
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return _resize_box(im, (left, top, left + side, top + side), size)


def _random_squares(im: Image.Image, size: int, crops: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w, h = im.size
    short = min(w, h)
    out = []
    for _ in range(crops):
        side = max(1, round(rng.uniform(MIN_CROP_FRACTION, 1.0) * short))
        left = int(rng.integers(0, w - side + 1))
        top = int(rng.integers(0, h - side + 1))
        out.append(_resize_box(im, (left, top, left + side, top + side), size))
    return out
