"""Colorizing files: which inputs (files, folders, globs), which outputs (never over an
input, never silently over an earlier output), and writing them in the input's format."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from colorstudy.cli_defaults import FORMAT_SUFFIX
from colorstudy.colorize import Colorizer, open_photo, side_by_side

SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
# Suffix (lower case) -> PIL format name; the formats a photo is read from and written to.
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
# --format choice -> the suffix written


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
