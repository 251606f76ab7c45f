"""Decoding one photo file: every bad input is a named reject, every odd mode becomes RGB."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorstudy.config import DataParams
from colorstudy.data.images import DecodedImage, Reject, color_stats, color_verdict, crop_seed, decode_image
from colorstudy.lab import rgb_to_lab_np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
FLOWER = DATASETS / "flowers102-subset" / "image_00001.jpg"  # 303x256
pytestmark = pytest.mark.skipif(not FLOWER.is_file(), reason="shared photo sets not present")

LIMITS = dict(min_side=32, max_pixels=89_478_485)


def decode(path: Path, size: int = 64, **kw) -> DecodedImage | Reject:
    return decode_image(path, image_size=size, **{**LIMITS, **kw})


def ok(path: Path, size: int = 64, **kw) -> DecodedImage:
    result = decode(path, size, **kw)
    assert isinstance(result, DecodedImage), result
    for crop in result.crops:
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    return result


def rejected(path: Path, **kw) -> str:
    result = decode(path, **kw)
    assert isinstance(result, Reject), f"{path.name} was accepted"
    return result.reason


@pytest.fixture(scope="module")
def flower() -> Image.Image:
    return Image.open(FLOWER).convert("RGB")


def save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def png16(rgb16: np.ndarray) -> bytes:
    """A 16-bit RGB PNG, which PIL cannot write itself."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# -- good photos ------------------------------------------------------------------------

def test_real_photo_is_resized_and_center_cropped(flower):
    result = ok(FLOWER, 64)
    assert (result.width, result.height) == flower.size and not result.gray_mode
    # no resampling when the shorter side already is the target: exactly the center square
    exact = ok(FLOWER, 256).crops[0]
    left = (flower.width - 256) // 2
    assert np.array_equal(exact, np.asarray(flower)[:, left:left + 256])


def test_center_crop_keeps_the_middle(tmp_path):
    stripes = np.zeros((100, 300, 3), np.uint8)
    stripes[:, :100, 0] = stripes[:, 100:200, 1] = stripes[:, 200:, 2] = 255
    crop = ok(save(Image.fromarray(stripes), tmp_path / "stripes.png"), 64).crops[0].astype(int)
    assert crop[..., 1].mean() > 250 and crop[..., 0].mean() < 5 and crop[..., 2].mean() < 5


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode(tmp_path, flower):
    big = flower.resize((flower.width * 4, flower.height * 4), Image.Resampling.BICUBIC)
    path = save(big, tmp_path / "big.jpg", quality=95)
    drafted = ok(path, 64).crops[0].astype(float)
    full = Image.open(path).convert("RGB")
    side = min(full.size)
    box = ((full.width - side) // 2, (full.height - side) // 2)
    reference = np.asarray(full.resize((64, 64), Image.Resampling.LANCZOS,
                                       box=(*box, box[0] + side, box[1] + side))).astype(float)
    # libjpeg's DCT-domain 1/8 scaling differs from Lanczos on the full decode by ~3/255 on
    # this (sharp, upsampled) photo: the size of moving the crop by 2 full-size pixels
    assert np.abs(drafted - reference).mean() < 4.0


def test_random_crops_are_deterministic_and_seeded(tmp_path, flower):
    a = ok(FLOWER, 64, crops=5, seed=crop_seed("g", "p.jpg", 42))
    b = ok(FLOWER, 64, crops=5, seed=crop_seed("g", "p.jpg", 42))
    c = ok(FLOWER, 64, crops=5, seed=crop_seed("g", "p.jpg", 43))
    assert len(a.crops) == 5
    assert all(np.array_equal(x, y) for x, y in zip(a.crops, b.crops))
    assert not all(np.array_equal(x, y) for x, y in zip(a.crops, c.crops))
    assert len({x.tobytes() for x in a.crops}) == 5


# -- bad inputs -------------------------------------------------------------------------

def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert rejected(tmp_path / "empty.jpg") == "empty"


def test_missing_file(tmp_path):
    assert rejected(tmp_path / "nope.jpg") == "missing"


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a photo\n" * 50)
    assert rejected(tmp_path / "notes.jpg") == "unreadable"


def test_random_bytes(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    assert rejected(tmp_path / "noise.jpg") == "unreadable"


def test_corrupt_header(tmp_path):
    data = bytearray(FLOWER.read_bytes())
    data[2:400] = bytes(398)  # wipe the JPEG tables after the SOI marker
    (tmp_path / "corrupt.jpg").write_bytes(bytes(data))
    assert rejected(tmp_path / "corrupt.jpg") in ("unreadable", "corrupt", "truncated")


def test_truncated_jpeg(tmp_path):
    data = FLOWER.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert rejected(tmp_path / "cut.jpg") == "truncated"


def test_truncated_png(tmp_path, flower):
    data = save(flower, tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert rejected(tmp_path / "cut.png") == "truncated"


def test_too_small(tmp_path, flower):
    path = save(flower.resize((40, 20)), tmp_path / "tiny.png")
    assert rejected(path) == "too_small"
    assert isinstance(decode(path, min_side=16), DecodedImage)  # upsampled when allowed


def test_decompression_bomb_by_max_pixels(tmp_path, flower):
    path = save(flower, tmp_path / "bomb.png")
    assert rejected(path, max_pixels=303 * 256 - 1) == "decompression_bomb"
    assert isinstance(decode(path, max_pixels=303 * 256), DecodedImage)


def test_decompression_bomb_by_pils_own_guard(tmp_path, flower, monkeypatch):
    path = save(flower, tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warning and error zones both below the photo
    assert rejected(path) == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 303 * 256 // 3 * 2)  # the warning-only zone
    assert rejected(path) == "decompression_bomb"


# -- modes ------------------------------------------------------------------------------

def test_cmyk_jpeg(tmp_path, flower):
    result = ok(save(flower.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95), 256)
    reference = ok(save(flower, tmp_path / "rgb.png"), 256).crops[0]
    assert np.abs(result.crops[0].astype(int) - reference).mean() < 4 and not result.gray_mode


def test_palette_png_with_transparency_composited_on_white(tmp_path, flower):
    pal = flower.quantize(64)
    pal.putpixel((0, 0), 0)
    pal.info["transparency"] = 0  # palette index 0 is transparent
    result = ok(save(pal, tmp_path / "pal.png", transparency=0), 256)
    left = (flower.width - 256) // 2
    opaque = np.asarray(pal.convert("RGB"))[:, left:left + 256]
    index = np.asarray(pal)[:, left:left + 256]
    assert np.array_equal(result.crops[0][index != 0], opaque[index != 0])
    assert (result.crops[0][index == 0] == 255).all() and not result.gray_mode


def test_rgba_composited_on_white(tmp_path, flower):
    rgba = np.dstack([np.asarray(flower), np.full(flower.size[::-1], 255, np.uint8)])
    rgba[:, : flower.width // 2, 3] = 0
    crop = ok(save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"), 256).crops[0]
    left = (flower.width - 256) // 2
    assert (crop[:, : flower.width // 2 - left - 1] == 255).all()
    assert np.array_equal(crop[:, -10:], np.asarray(flower)[:, left + 246:left + 256])


def test_la_is_gray_and_composited(tmp_path, flower):
    la = flower.convert("LA")
    la.putalpha(128)
    result = ok(save(la, tmp_path / "la.png"))
    assert result.gray_mode


def test_sixteen_bit_gray_png(tmp_path):
    wide = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (80, 1))  # square: the crop keeps it all
    path = save(Image.fromarray(wide), tmp_path / "gray16.png")
    assert Image.open(path).mode.startswith("I")
    result = ok(path, 64)
    assert result.gray_mode
    crop = result.crops[0]
    assert crop[..., 0].min() <= 10 and crop[..., 0].max() >= 245  # scaled, not clipped at 255/65535
    assert np.array_equal(crop[..., 0], crop[..., 1])


def test_sixteen_bit_rgb_png(tmp_path, flower):
    rgb16 = np.asarray(flower).astype(np.uint16) * 257
    (tmp_path / "rgb16.png").write_bytes(png16(rgb16))
    result = ok(tmp_path / "rgb16.png", 256)
    left = (flower.width - 256) // 2
    assert np.array_equal(result.crops[0], np.asarray(flower)[:, left:left + 256]) and not result.gray_mode


def test_grayscale_jpeg_is_gray_mode(tmp_path, flower):
    assert ok(save(flower.convert("L"), tmp_path / "gray.jpg")).gray_mode
    assert ok(save(flower.convert("1"), tmp_path / "bw.png")).gray_mode


def test_exif_orientation_applied(tmp_path, flower):
    # Orientation 6: the camera stored the pixels turned a quarter counter-clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = flower.transpose(Image.Transpose.ROTATE_90)
    upright = ok(save(flower, tmp_path / "upright.png"), 256)
    for path in (save(stored, tmp_path / "turned.png", exif=exif.tobytes()),
                 save(stored, tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)):
        result = ok(path, 256)
        assert (result.width, result.height) == flower.size
        err = np.abs(result.crops[0].astype(int) - upright.crops[0]).mean()
        assert err == 0 if path.suffix == ".png" else err < 4


# -- grayscale detection ----------------------------------------------------------------

def _center_square(path: Path, size: int = 64) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(image.crop(box).resize((size, size), Image.LANCZOS))


def _lab(rgb: np.ndarray) -> np.ndarray:
    return rgb_to_lab_np(rgb, channel_axis=-1).astype(np.float64)


def _to_rgb(lab: np.ndarray) -> np.ndarray:
    from skimage.color import lab2rgb

    return (lab2rgb(lab) * 255).round().astype(np.uint8)


def desaturated(rgb: np.ndarray, keep: float) -> np.ndarray:
    lab = _lab(rgb)
    lab[..., 1:] *= keep
    return _to_rgb(lab)


def toned(rgb: np.ndarray, hue_deg: float, chroma: float = 22.0) -> np.ndarray:
    """A toned print of the photo: its lightness, one hue, chroma peaking in the mid-tones."""
    L = _lab(rgb)[..., 0]
    c = chroma * np.sin(np.pi * L / 100)
    hue = np.radians(hue_deg)
    return _to_rgb(np.stack([L, c * np.cos(hue), c * np.sin(hue)], axis=-1))


def verdicts(images: list[np.ndarray]) -> list[str | None]:
    d = DataParams()
    lab = rgb_to_lab_np(np.stack(images), channel_axis=1)
    stats = color_stats(lab[:, 1:], d.color_chroma)
    out = []
    for k in range(len(images)):
        verdict = color_verdict(stats, k, color_chroma=d.color_chroma, min_color_fraction=d.min_color_fraction,
                                min_hue_spread=d.min_hue_spread)
        out.append(None if verdict is None else verdict[0])
    return out


@pytest.fixture(scope="module")
def real_photos() -> list[np.ndarray]:
    """Faces and flowers from the shared sets, as the 64 px squares the shards hold."""
    faces = sorted((DATASETS / "faces").glob("*.jpg"))[::75]
    flowers = sorted((DATASETS / "flowers102-subset").glob("*.jpg"))[::250]
    return [_center_square(p) for p in [*faces, *flowers]]


def test_color_test_keeps_real_color_photos(real_photos):
    assert verdicts(real_photos) == [None] * len(real_photos)


def test_color_test_drops_gray_and_desaturated_photos(real_photos):
    gray = [np.repeat(np.asarray(Image.fromarray(p).convert("L"))[..., None], 3, axis=2) for p in real_photos]
    assert verdicts(gray) == ["grayscale"] * len(gray)
    faded = [desaturated(p, 0.1) for p in real_photos]
    assert verdicts(faded) == ["grayscale"] * len(faded)


@pytest.mark.parametrize("hue", [70.0, 250.0], ids=["sepia", "cyanotype"])
def test_color_test_drops_toned_monochrome_prints(real_photos, hue):
    prints = [toned(p, hue) for p in real_photos]
    assert verdicts(prints) == ["monochrome"] * len(prints)


def test_color_test_keeps_a_gray_scene_with_one_colored_object(real_photos):
    """What mean chroma got wrong: a muted photo whose color is in one place."""
    photo = real_photos[-8]  # a saturated flower
    scene = desaturated(photo, 0.0)
    c = photo.shape[0] // 2
    scene[c - 7:c + 7, c - 7:c + 7] = photo[c - 7:c + 7, c - 7:c + 7]  # one object, 5 % of the frame
    muted = real_photos[-1]  # a real flower photo, mostly gray-green leaves: 2.5 % of it colored
    lab = rgb_to_lab_np(np.stack([scene, muted]), channel_axis=1)
    assert (color_stats(lab[:, 1:], DataParams().color_chroma).mean_chroma < 4.0).all()  # the old test's cut
    assert verdicts([scene, muted]) == [None, None]


def test_color_stats_are_float64_and_name_the_reason():
    d = DataParams()
    ab = np.zeros((2, 2, 8, 8), dtype=np.float32)
    ab[1, 0] = 30.0  # one hue everywhere
    stats = color_stats(ab, d.color_chroma)
    assert stats.mean_chroma.dtype == np.float64 and stats.color_fraction.tolist() == [0.0, 1.0]
    kw = dict(color_chroma=d.color_chroma, min_color_fraction=d.min_color_fraction, min_hue_spread=d.min_hue_spread)
    assert color_verdict(stats, 0, **kw) == ("grayscale", "0.00 % of pixels at chroma >= 12 (need 1 %)")
    reason, detail = color_verdict(stats, 1, **kw)
    assert reason == "monochrome" and "0.00° < min_hue_spread 2.5°" in detail
