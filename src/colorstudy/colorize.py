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
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps
from torch import nn
from tqdm import tqdm

from colorstudy import checkpoint
from colorstudy.lab import denormalize_ab, lab_from_l_ab, lab_to_rgb, normalize_l, rgb_to_lab, to_uint8
from colorstudy.runtime import autocast, inference, resolve_device

DEFAULT_MODELS_DIR = Path("data/models")
DEFAULT_RANKING = Path("reports/ranking.json")
CHECKPOINT_NAME = "selected.pt"

# Suffix (lower case) -> PIL format name; the formats a photo is read from and written to.
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
# --format choice -> the suffix written
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}
SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}

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


class ColorizeError(RuntimeError):
    """The colorizer cannot start (no such model, no ranking, no GPU); the message says what to do."""


# -- models --------------------------------------------------------------------------

def available_models(models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[str]:
    """Study ids with a trained checkpoint under ``models_dir``."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / CHECKPOINT_NAME).is_file())


def _trained_models_hint(models_dir: Path) -> str:
    ids = available_models(models_dir)
    if ids:
        return f"trained models in {models_dir}: {', '.join(ids)}"
    return f"there are no trained models in {models_dir} (run `dvc repro` to train the study)"


def _first_lines(text: str, keep: int = 3) -> str:
    # a state-dict mismatch lists every tensor; the first few say enough
    lines = text.splitlines()
    return "\n".join(lines[:keep] + ([f"\t... ({len(lines) - keep} more lines)"] if len(lines) > keep else []))


def resolve_checkpoint(model: str | Path | None, models_dir: str | Path = DEFAULT_MODELS_DIR,
                       ranking: str | Path = DEFAULT_RANKING) -> Path:
    """The checkpoint file a ``--model`` value names.

    ``None`` -> the best model of the last report (``ranking``); a file -> itself; a
    folder holding ``selected.pt`` -> that; anything else is a study id under ``models_dir``.
    """
    models_dir = Path(models_dir)
    if model is None:
        ranking = Path(ranking)
        if not ranking.is_file():
            raise ColorizeError(
                f"no --model given and {ranking} does not exist, so there is no best model to use: "
                f"run `dvc repro` to train and rank the study's models, or pass --model ID|CHECKPOINT "
                f"({_trained_models_hint(models_dir)})")
        try:
            report = json.loads(ranking.read_text())
            model = report.get("best") or report["ranking"][0]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise ColorizeError(f"{ranking} names no best model ({type(e).__name__}: {e}); "
                                f"rerun `dvc repro` or pass --model ID|CHECKPOINT") from e
    path = Path(model)
    if path.is_file():
        return path
    if (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME
    if path.suffix in (".pt", ".pth") or len(path.parts) > 1:
        raise ColorizeError(f"no checkpoint file {path}; {_trained_models_hint(models_dir)}")
    candidate = models_dir / str(model) / CHECKPOINT_NAME
    if not candidate.is_file():
        raise ColorizeError(f"no trained model {str(model)!r} (no {candidate}); {_trained_models_hint(models_dir)}")
    return candidate


def model_size(size: int, stride: int) -> int:
    """``size`` rounded to the nearest multiple of the model's stride (at least one stride)."""
    return max(stride, round(size / stride) * stride)


def load_colorizer(model: str | Path | None = None, device: str = "auto",
                   models_dir: str | Path = DEFAULT_MODELS_DIR, size: int | None = None,
                   ranking: str | Path = DEFAULT_RANKING) -> Colorizer:
    """A :class:`Colorizer` for a study id, a checkpoint path, or (``None``) the best ranked model.

    ``size`` is the square resolution the model runs at; by default the one it was
    trained at. The checkpoint is read with ``weights_only=True``.
    """
    path = resolve_checkpoint(model, models_dir, ranking)
    try:
        dev = resolve_device(device)
    except (RuntimeError, ValueError) as e:
        raise ColorizeError(str(e)) from e
    try:
        payload = checkpoint.load(path)  # weights_only=True: a checkpoint cannot run code
        net = checkpoint.build_generator(payload, dev)
    except checkpoint.CheckpointError as e:
        where = "" if str(path) in str(e) else f"{path}: "
        raise ColorizeError(f"{where}{_first_lines(str(e))}; {_trained_models_hint(Path(models_dir))}") from e
    if size is None:
        size = (payload.get("run") or {}).get("image_size")
        if not isinstance(size, int):
            raise ColorizeError(f"{path} does not say which image size it was trained at; pass --size N")
    if size < 1:
        raise ColorizeError(f"size must be a positive number of pixels, got {size}")
    return Colorizer(net, dev, model_size(size, getattr(net, "stride", 1)),
                     name=str(payload.get("model_id", path.parent.name)),
                     architecture=str(payload.get("architecture", "?")))


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
                 architecture: str = "?") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.size = size
        self.name = name
        self.architecture = architecture

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


# -- files ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    compare: Path


@dataclass
class Summary:
    written: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason)
    # (input, its existing output): left alone without overwrite; not a failure, so a
    # rerun into the same folder only does what is missing and still exits 0
    skipped: list[tuple[Path, Path]] = field(default_factory=list)
    output_dir: Path | None = None  # only to say where the skipped outputs are

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        text = f"colorized {len(self.written)}, skipped {len(self.skipped)}"
        if self.skipped:
            where = f"in {self.output_dir}" if self.output_dir is not None else "there"
            text += f" (already {where}; --overwrite to redo them)"
        text += f", failed {len(self.failed)}"
        if self.failed:
            text += ":\n" + "\n".join(f"  {path}: {reason}" for path, reason in self.failed)
        return text


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in FORMATS


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def expand_inputs(inputs: Iterable[str | Path],
                  exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Files to colorize as ``(path, output name relative to the output folder)``, and failures.

    Folders are searched recursively and keep their layout in the output folder
    (so equal names in subfolders do not collide); files under ``exclude`` (the
    output folder) are skipped there, so rerunning into a folder inside an input
    folder does not colorize earlier outputs. Other files in folders and glob matches
    that are not photos are ignored; a named file that is not one is a failure.
    """
    found: list[tuple[Path, Path]] = []
    failed: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    exclude = exclude.resolve() if exclude is not None else None

    def add(path: Path, name: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, name))

    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and is_supported(f) and not (exclude and _inside(f.resolve(), exclude)):
                    add(f, f.relative_to(path))
        elif path.is_file():
            if is_supported(path):
                add(path, Path(path.name))
            else:
                failed.append((path, f"unsupported file type {path.suffix or '(none)'}; "
                                     f"supported: {', '.join(sorted(FORMATS))}"))
        elif any(c in item for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            photos = [m for m in matches if m.is_file() and is_supported(m)]
            if not photos:
                failed.append((path, "no photo matches this pattern"))
            for m in photos:
                add(m, Path(m.name))
        else:
            failed.append((path, "no such file or folder"))
    return found, failed


def plan_jobs(inputs: Iterable[str | Path], output_dir: str | Path,
              fmt: str | None = None) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Where each input's colorized photo (and comparison sheet) would be written."""
    output_dir = Path(output_dir)
    if fmt is not None and fmt not in FORMAT_SUFFIX:
        raise ValueError(f"format must be one of {sorted(FORMAT_SUFFIX)}, got {fmt!r}")
    found, failed = expand_inputs(inputs, exclude=output_dir)
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for source, name in found:
        suffix = FORMAT_SUFFIX[fmt] if fmt else name.suffix
        output = output_dir / name.with_suffix(suffix)
        compare = output.with_name(f"{output.stem}_compare{suffix}")
        clash = claimed.get(output.resolve())
        if clash is not None:
            failed.append((source, f"its output {output} is already the output of {clash}"))
            continue
        claimed[output.resolve()] = source
        jobs.append(Job(source, output, compare))
    return jobs, failed


def _targets_to_write(targets: Sequence[Path], inputs: set[Path], overwrite: bool) -> list[Path]:
    """The targets a job writes: all of them with ``overwrite``, else those not there yet.

    A target that is one of the inputs is an error even with ``overwrite``.
    """
    for target in targets:
        if target.resolve() in inputs:
            raise FileExistsError(f"refusing to write {target}: it is one of the input photos")
    return [t for t in targets if overwrite or not t.exists()]


def save_image(image: Image.Image, path: Path) -> None:
    """Write in the format the suffix names, via a temporary file, so a crash never
    leaves a half-written photo under the final name."""
    fmt = FORMATS[path.suffix.lower()]
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")  # JPEG has no alpha
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format=fmt, **SAVE_OPTIONS.get(fmt, {}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def colorize_paths(inputs: Iterable[str | Path], output_dir: str | Path, colorizer: Colorizer, *,
                   batch_size: int = 8, overwrite: bool = False, compare: bool = False,
                   fmt: str | None = None, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> Summary:
    """Colorize photo files, folders (recursive) or globs into ``output_dir``.

    The model runs on batches of ``batch_size`` photos at model resolution; the
    full-resolution work is done one photo at a time, and a photo is decoded again for
    it rather than kept, so memory does not grow with the batch size. A photo that
    cannot be read or written is recorded in the summary (and passed to ``log``) and
    the others go on. Inputs are never overwritten. Without ``overwrite`` an existing
    output is kept: a photo whose outputs all exist is counted as skipped (not read,
    not a failure), and with ``compare`` only the missing one of output and sheet is written.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    jobs, failures = plan_jobs(inputs, output_dir, fmt)
    summary = Summary(output_dir=Path(output_dir))
    input_paths = {job.source.resolve() for job in jobs}

    def fail(path: Path, reason: str) -> None:
        summary.failed.append((path, reason))
        if log is not None:
            log(f"failed {path}: {reason}")

    for path, reason in failures:
        fail(path, reason)
    with tqdm(total=len(jobs), desc="colorizing", unit="photo", disable=not progress) as bar:
        for start in range(0, len(jobs), batch_size):
            batch: list[tuple[Job, list[Path], torch.Tensor]] = []
            for job in jobs[start:start + batch_size]:
                try:
                    targets = _targets_to_write([job.output, job.compare] if compare else [job.output],
                                                input_paths, overwrite)
                    if not targets:
                        summary.skipped.append((job.source, job.output))
                        bar.update()
                        continue
                    batch.append((job, targets, colorizer.model_input(open_photo(job.source))))
                except Exception as e:  # any unreadable photo: report it and go on with the rest
                    fail(job.source, _reason(e))
                    bar.update()
            if not batch:
                continue
            predicted = colorizer.predict(torch.stack([L for _, _, L in batch]))
            for (job, targets, _), ab_n in zip(batch, predicted):
                try:
                    _write(colorizer, job, ab_n, targets)
                    summary.written.append((job.source, job.output))
                except Exception as e:
                    fail(job.source, _reason(e))
                bar.update()
    return summary


def _write(colorizer: Colorizer, job: Job, ab_n: torch.Tensor, targets: Sequence[Path]) -> None:
    # A function of its own so the decoded photo is freed before the next one is decoded.
    # Only ``targets`` are written: an existing output kept without --overwrite stays as it was.
    photo = open_photo(job.source)
    rendered = colorizer.render(photo, ab_n, gray=job.compare in targets)
    if job.output in targets:
        save_image(rendered.image, job.output)
    if job.compare in targets:
        save_image(side_by_side(photo, rendered), job.compare)


__all__ = ["ColorizeError", "Colorizer", "Job", "Photo", "Rendered", "Summary", "available_models",
           "colorize_paths", "expand_inputs", "load_colorizer", "model_size", "open_photo", "plan_jobs",
           "prepare", "resolve_checkpoint", "save_image", "side_by_side", "upsample_rows"]
