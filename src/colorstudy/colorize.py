"""Colorizing a user's black-and-white photos with a trained study model.

How one photo is colorized:

1. The photo is decoded and turned upright (EXIF orientation). Palette, CMYK and
   other modes become RGB (RGBA when they carry transparency), bilevel becomes L;
   16-bit grayscale stays 16-bit for the lightness.
2. The model sees the whole photo resized to a **square** of ``size`` pixels (a
   multiple of the model's stride; Lanczos on the photo's own pixels, then L, as the
   training images were made). Square, because that is what the models were trained
   on and it gives every model pixel to the photo (no padding); the cost is a squeeze
   of very wide or tall photos, which only the low-resolution chroma sees.
3. The predicted ab is resized (bilinear, the sampling of ``F.interpolate`` with
   ``align_corners=False``) to the photo's **full** resolution, clipped to the valid
   ab range and joined with the photo's own full-resolution L. Nothing gets blurrier
   than the input: only the chroma comes from the model.
4. Full-resolution work runs on the model's device in horizontal strips of
   :data:`STRIP_PIXELS` pixels, so no float32 full-size copy ever exists: a photo
   needs its decoded pixels, the 8-bit output and a few MB (measured by
   ``benchmarks/colorize_speed.py``: 2.3x a 12 MP photo's own 36 MB for a grayscale
   JPEG, 3.4x for an RGB one, whose decoded and output pixels PIL stores as 4 bytes).

Where the colorized L differs from the input L: colors outside the sRGB gamut are
clipped per channel (as the study's metrics do), which changes their lightness.

Outputs keep the input's size and file format (JPEG at quality 95) unless a format is
asked for; RGBA and LA inputs keep their alpha, 16-bit inputs are written as 8-bit
RGB, and metadata (EXIF, ICC profiles) is not copied: outputs are upright sRGB.

Which checkpoint a study id serves (one of its trained seeds, by a documented rule, said
on every run) is :mod:`colorstudy.colorize_models`'s business.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps
from torch import nn

from colorstudy.checkpoint import CheckpointError
from colorstudy.cli_defaults import DEFAULT_MODELS_DIR
from colorstudy.colorize_models import (
    CHECKPOINT_NAME,
    DEFAULT_RANKING,
    ColorizeError,
    Served,
    available_models,
    choose_checkpoint,
    colorize_error,
    trained_models_hint,
    trained_seeds,
)
from colorstudy.lab import denormalize_ab, lab_from_l_ab, lab_to_rgb, normalize_l, rgb_to_lab, to_uint8
from colorstudy.runtime import autocast, inference, resolve_device

# Full-resolution pixels converted at a time. The Lab conversions keep a dozen or more
# float32 temporaries of a strip alive (~4 MB per 64 K pixels), whatever the photo's
# size; larger strips buy little speed (measured: 256 K pixels, ~10% faster, +50 MB).
STRIP_PIXELS = 1 << 16
# Mean Lab chroma below which an input counts as already black-and-white (JPEG noise in
# a gray photo stored as RGB stays well under it); --compare then shows no "original".
GRAY_CHROMA = 2.0
# The model input is resized as data.images resizes the training photos.
RESAMPLE, REDUCING_GAP = Image.Resampling.LANCZOS, 3.0

# Modes read as they are: lightness from L / I;16 / RGB, alpha from LA / RGBA.
_NATIVE_MODES = {"L", "LA", "I;16", "RGB", "RGBA"}
_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA",
            "I": "I;16", "I;16B": "I;16", "I;16L": "I;16", "I;16N": "I;16"}


# -- models --------------------------------------------------------------------------

def model_size(size: int, stride: int) -> int:
    """``size`` rounded to the nearest multiple of the model's stride (at least one stride)."""
    return max(stride, round(size / stride) * stride)


def resolve_checkpoint(model: str | Path | None, models_dir: str | Path = DEFAULT_MODELS_DIR,
                       ranking: str | Path = DEFAULT_RANKING, seed: int | None = None) -> Path:
    """The checkpoint file a ``--model`` (and ``--seed``) value names; the rule is
    :func:`colorstudy.colorize_models.choose_checkpoint`'s, which also says why."""
    return choose_checkpoint(model, models_dir, ranking, seed)[0].path


def load_colorizer(model: str | Path | None = None, device: str = "auto",
                   models_dir: str | Path = DEFAULT_MODELS_DIR, size: int | None = None,
                   ranking: str | Path = DEFAULT_RANKING, seed: int | None = None) -> Colorizer:
    """A :class:`Colorizer` for a study id, a checkpoint path, or (``None``) the best ranked model.

    A study id serves the trained seed with the lowest validation ab-L1 (ties: the
    smaller seed), or ``seed``; ``Colorizer.served.message`` says which and why.
    ``size`` is the square resolution the model runs at; by default the one it was
    trained at. The checkpoint is read with ``weights_only=True``.
    """
    served, trained = choose_checkpoint(model, models_dir, ranking, seed)
    path = served.path
    try:
        dev = resolve_device(device)
    except (RuntimeError, ValueError) as e:
        raise ColorizeError(str(e)) from e
    try:
        net = trained.model(dev)
    except CheckpointError as e:
        raise colorize_error(path, e, models_dir) from e
    if size is None:
        if trained.run is None:
            raise ColorizeError(f"{path} does not say which image size it was trained at; pass --size N")
        size = trained.run.image_size
    if size < 1:
        raise ColorizeError(f"size must be a positive number of pixels, got {size}")
    return Colorizer(net, dev, model_size(size, getattr(net, "stride", 1)),
                     name=trained.model_id or served.label, architecture=trained.architecture, served=served)


# -- images --------------------------------------------------------------------------

@dataclass
class Photo:
    """A decoded photo, upright, in a mode the colorizer reads directly."""

    pixels: Image.Image  # L, LA, I;16, RGB or RGBA

    @property
    def has_alpha(self) -> bool:
        return self.pixels.mode in ("LA", "RGBA")

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.size


def prepare(image: Image.Image) -> Photo:
    """Upright ``image`` in a mode of :data:`_NATIVE_MODES` (converted only when needed)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in _CONVERT:
        image = image.convert(_CONVERT[image.mode])
    elif image.mode not in _NATIVE_MODES:
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, F, ...: PIL's own conversion
    return Photo(image)


def open_photo(path: str | Path) -> Photo:
    """Decode a file fully (a truncated or corrupt file fails here, not halfway through)."""
    with Image.open(path) as image:
        image.load()
        return prepare(image)


def _color_channels(image: Image.Image) -> np.ndarray:
    """The pixels without alpha: ``[H, W]`` gray or ``[H, W, 3]`` RGB, uint8 or uint16."""
    arr = np.asarray(image)
    if image.mode in ("LA", "RGBA"):
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)  # torch rejects big-endian


@functools.lru_cache(maxsize=4)
def _gray_lightness(levels: int, device: torch.device) -> torch.Tensor:
    """L of every gray level (R = G = B) of an integer image, computed once by rgb_to_lab."""
    v = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    return rgb_to_lab(v.expand(3, 1, levels))[0, 0].float().to(device)


def _lab(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8/uint16 sRGB pixels -> Lab ``[3, H, W]`` float32; gray ``[H, W]`` -> L ``[1, H, W]``.

    Gray pixels have ab = 0 by definition, and their L comes from a table of the
    gray levels: a third of the work of converting them as three equal channels.
    """
    if pixels.ndim == 2:
        table = _gray_lightness(int(np.iinfo(pixels.dtype).max) + 1, device)
        index = torch.tensor(pixels if pixels.dtype == np.uint8 else pixels.astype(np.int32))
        return table[index.to(device).long()][None]
    # uint8 travels to the device as bytes; torch has few uint16 kernels, so that goes as float
    x = torch.tensor(pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32))
    x = x.to(device).float() / float(np.iinfo(pixels.dtype).max)
    return rgb_to_lab(x.permute(2, 0, 1))


def upsample_rows(ab: torch.Tensor, y0: int, y1: int, height: int, width: int) -> torch.Tensor:
    """Rows ``y0:y1`` of ``ab`` ``[1, C, h, w]`` resized bilinearly to ``height x width``.

    Equal (to float rounding) to the same rows of ``F.interpolate(ab, (height, width),
    mode="bilinear", align_corners=False)``, without building the full-size tensor:
    with ``align_corners=False`` output pixel ``i`` of ``n`` samples the normalized
    coordinate ``(2i + 1)/n - 1`` whatever the input size, and border padding is the
    edge clamping ``interpolate`` does.
    """
    kw = {"device": ab.device, "dtype": ab.dtype}
    xs = (2 * torch.arange(width, **kw) + 1) / width - 1
    ys = (2 * torch.arange(y0, y1, **kw) + 1) / height - 1
    grid = torch.stack((xs.expand(y1 - y0, width), ys[:, None].expand(y1 - y0, width)), dim=-1)
    return F.grid_sample(ab, grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]


@dataclass
class Rendered:
    image: Image.Image  # RGB, or RGBA when the input had alpha
    gray: Image.Image | None  # the lightness alone (ab = 0), what the model saw; when asked for
    input_chroma: float  # mean Lab chroma of the input: ~0 for a black-and-white photo

    @property
    def input_was_color(self) -> bool:
        return self.input_chroma > GRAY_CHROMA


class Colorizer:
    """A loaded generator plus the resolution it runs at; see :func:`load_colorizer`."""

    def __init__(self, model: nn.Module, device: torch.device, size: int, name: str = "model",
                 architecture: str = "?", served: Served | None = None) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.size = size
        self.name = name
        self.architecture = architecture
        self.served = served  # which checkpoint (seed) and why; None for a model handed in directly

    def model_input(self, photo: Photo) -> torch.Tensor:
        """Normalized L ``[1, size, size]`` of the photo resized as the training images were."""
        small = photo.pixels.resize((self.size, self.size), RESAMPLE, reducing_gap=REDUCING_GAP)
        return normalize_l(_lab(_color_channels(small), torch.device("cpu"))[:1])

    def predict(self, L_n: torch.Tensor) -> torch.Tensor:
        """Normalized L ``[B, 1, size, size]`` -> normalized ab ``[B, 2, size, size]``, float32."""
        with inference(self.model), autocast(self.device):
            return self.model(L_n.to(self.device)).float()

    def render(self, photo: Photo, ab_n: torch.Tensor, *, gray: bool = False) -> Rendered:
        """The photo's full-resolution L joined with the predicted ``ab_n`` ``[2, h, w]``."""
        width, height = photo.size
        ab_n = ab_n.to(self.device, torch.float32)[None]
        out = Image.new("RGBA" if photo.has_alpha else "RGB", (width, height))
        gray_image = Image.new("L", (width, height)) if gray else None
        chroma_sum = 0.0
        rows = max(1, STRIP_PIXELS // width)
        for y0 in range(0, height, rows):
            y1 = min(height, y0 + rows)
            lab_in = _lab(_color_channels(photo.pixels.crop((0, y0, width, y1))), self.device)
            if len(lab_in) == 3:
                chroma_sum += lab_in[1:].square().sum(0).sqrt().sum().item()
            L = lab_in[:1]
            ab = denormalize_ab(upsample_rows(ab_n, y0, y1, height, width))
            rgb = lab_to_rgb(lab_from_l_ab(L, ab))  # lab_from_l_ab clips ab to the valid range
            out.paste(Image.fromarray(to_uint8(rgb.permute(1, 2, 0))), (0, y0))
            if gray_image is not None:
                neutral = lab_to_rgb(lab_from_l_ab(L, torch.zeros_like(ab)))
                gray_image.paste(Image.fromarray(to_uint8(neutral[0])), (0, y0))
        if photo.has_alpha:
            out.putalpha(photo.pixels.getchannel("A"))
        return Rendered(out, gray_image, chroma_sum / (width * height))

    def colorize(self, image: Image.Image) -> Image.Image:
        """A colorized copy of ``image`` (any mode, upright per EXIF), same size, RGB or RGBA."""
        photo = prepare(image)
        return self.render(photo, self.predict(self.model_input(photo)[None])[0]).image


def side_by_side(photo: Photo, rendered: Rendered) -> Image.Image:
    """gray | colorized | original (the original only when the input was in color)."""
    if rendered.gray is None:
        raise ValueError("side_by_side needs a render made with gray=True")
    panels = [rendered.gray, rendered.image]
    if rendered.input_was_color:
        panels.append(photo.pixels)
    width, height = photo.size
    sheet = Image.new("RGB", (width * len(panels), height))
    for i, panel in enumerate(panels):
        sheet.paste(panel.convert("RGB"), (i * width, 0))
    return sheet


__all__ = ["CHECKPOINT_NAME", "DEFAULT_RANKING", "ColorizeError", "Colorizer", "Photo", "Rendered", "Served",
           "available_models", "load_colorizer", "model_size", "open_photo", "prepare", "resolve_checkpoint",
           "side_by_side", "trained_models_hint", "trained_seeds", "upsample_rows"]
