"""The preprocess stage: decode, clean, split and store photos as Lab shards.

Decoding runs in a pool of worker processes over fixed-size chunks of sources; the
results are judged (color test, duplicates), assigned their split
(``colorstudy.data.splits``) and written by :class:`~colorstudy.data.shards.ShardWriter`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from colorstudy.config import DataParams
from colorstudy.data.images import ColorStats, DecodedImage, Reject, color_stats, color_verdict, crop_seed, decode_image
from colorstudy.data.shards import FORMAT, MANIFEST, REJECTS, ShardWriter, _read_shard_arrays
from colorstudy.data.sources import SPLITS, Source
from colorstudy.data.splits import SplitAssigner, _image_ids, load_sources
from colorstudy.lab import rgb_to_lab_np

_STAGING = ".staging"
# Crops per worker task (whole sources, at least one). Fixed, not derived from the worker
# count, so batched Lab conversion sees the same batches, and writes the same bytes, anywhere.
CHUNK = 16


# -- decoding workers ----------------------------------------------------------------

@dataclass(frozen=True)
class _Settings:
    raw_dir: str
    image_size: int
    min_side: int
    max_pixels: int
    seed: int
    color_chroma: float


@dataclass(frozen=True)
class _Decoded:
    image: DecodedImage
    L: np.ndarray  # float16 [crops, 1, S, S], Lab units
    ab: np.ndarray  # float16 [crops, 2, S, S]
    color: ColorStats  # [crops], from the float32 Lab (images.color_stats)


def _init_worker(max_pixels: int) -> None:
    # Each worker is one core's worth of work; torch's own threads would oversubscribe.
    torch.set_num_threads(1)
    # Align PIL's own bomb guard (a process-wide global, safe to set in our workers) with ours.
    Image.MAX_IMAGE_PIXELS = max_pixels


def _process_chunk(settings: _Settings, chunk: Sequence[Source]) -> list[_Decoded | Reject]:
    decoded = [
        decode_image(Path(settings.raw_dir) / s.path, image_size=settings.image_size, min_side=settings.min_side,
                     max_pixels=settings.max_pixels, crops=s.crops,
                     seed=crop_seed(s.group, s.path, settings.seed))
        for s in chunk
    ]
    squares = [c for d in decoded if isinstance(d, DecodedImage) for c in d.crops]
    if not squares:
        return list(decoded)  # all rejects
    # one batched conversion, bit-identical on every machine (lab.py), so the shards are too
    lab_np = rgb_to_lab_np(np.stack(squares), channel_axis=1)
    stats = color_stats(lab_np[:, 1:], settings.color_chroma)
    lab = torch.from_numpy(lab_np)
    # torch's float16 cast is vectorized (numpy's is not); both round to nearest even exactly
    L16 = lab[:, :1].to(torch.float16, memory_format=torch.contiguous_format).numpy()
    ab16 = lab[:, 1:].to(torch.float16, memory_format=torch.contiguous_format).numpy()
    out: list[_Decoded | Reject] = []
    at = 0
    for d in decoded:
        if isinstance(d, Reject):
            out.append(d)
            continue
        n = len(d.crops)
        # the uint8 squares stay behind: only Lab crosses the process boundary
        part = ColorStats(*(getattr(stats, f.name)[at:at + n] for f in dataclasses.fields(ColorStats)))
        out.append(_Decoded(dataclasses.replace(d, crops=[]), L16[at:at + n], ab16[at:at + n], part))
        at += n
    return out


def _chunks(sources: Sequence[Source]) -> list[list[Source]]:
    chunks: list[list[Source]] = []
    crops = CHUNK
    for s in sources:
        if crops + s.crops > CHUNK:
            chunks.append([])
            crops = 0
        chunks[-1].append(s)
        crops += s.crops
    return chunks


def _clear_outputs(out_dir: Path) -> None:
    # Only our own files: a mistyped output path must not wipe someone's folder.
    for path in out_dir.glob("*.arrow"):
        path.unlink()
    for name in (MANIFEST, REJECTS):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / _STAGING, ignore_errors=True)


def preprocess(
    raw_dir: str | Path,
    out_dir: str | Path,
    params: DataParams,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode, clean, split and store ``raw_dir``'s photos as Lab shards in ``out_dir``.

    ``workers``: decoding processes (default ``os.cpu_count()``; 0 or 1 decodes in this
    process). Results do not depend on it. Returns the stage metrics: images kept per
    split, rejected files per reason, grayscale images and duplicate files excluded, and
    under ``timing`` the throughput (source files/s; images/s counts every crop made, kept
    or excluded as gray), which is not part of the stage's metrics.
    """
    start = time.perf_counter()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    sources = load_sources(raw_dir, params)
    ids = dict(zip((s.path for s in sources), _image_ids([s.path for s in sources])))
    splits = SplitAssigner(sources, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out_dir)
    staging = out_dir / _STAGING
    staging.mkdir()
    writers = {s: ShardWriter(staging, s, params.shard_size, params.image_size) for s in SPLITS}

    settings = _Settings(str(raw_dir), params.image_size, params.min_side, params.max_pixels, params.seed,
                         params.color_chroma)
    chunks = _chunks(sources)
    job = functools.partial(_process_chunk, settings)
    workers = (os.cpu_count() or 1) if workers is None else workers
    pool = (multiprocessing.Pool(workers, initializer=_init_worker, initargs=(params.max_pixels,))
            if workers > 1 and len(chunks) > 1 else None)

    rows: list[dict[str, Any]] = []
    dropped: list[dict[str, str]] = []
    first_copy: dict[str, Source] = {}  # file/pixel hash -> first source with it
    try:
        results = pool.imap(job, chunks) if pool else map(job, chunks)  # imap: in order, deterministic
        with tqdm(total=len(sources), unit="file", desc="preprocess", disable=not progress) as bar:
            for chunk, chunk_results in zip(chunks, results):
                for src, res in zip(chunk, chunk_results):
                    bar.update(1)
                    if isinstance(res, Reject):
                        dropped.append({"path": src.path, "reason": res.reason, "detail": res.detail})
                        continue
                    keys = ("file:" + res.image.file_sha256, "pixels:" + res.image.pixel_sha256)
                    original = next((first_copy[k] for k in keys if k in first_copy), None)
                    if original is not None:
                        splits.merge(src.group, original.group)
                        dropped.append({"path": src.path, "reason": "duplicate", "detail": f"of {original.path}"})
                    else:
                        for k in keys:
                            first_copy[k] = src
                        _keep(src, ids[src.path], res, params, splits, writers, rows, dropped)
    finally:
        if pool is not None:
            pool.terminate()  # idle after the last result; after an error, stops the rest
            pool.join()
        for w in writers.values():
            w.close()

    _move_into_place(staging, out_dir, rows, splits, writers, params)
    manifest = _write_manifest(out_dir, rows, params)
    rejects = pd.DataFrame(dropped, columns=["path", "reason", "detail"])
    rejects.to_csv(out_dir / REJECTS, index=False)
    return _stage_metrics(len(sources), manifest, rejects, params.image_size, workers if pool else 1,
                          time.perf_counter() - start)


def _move_into_place(staging: Path, out_dir: Path, rows: list[dict[str, Any]], splits: SplitAssigner,
                     writers: dict[str, ShardWriter], params: DataParams) -> None:
    final = [splits.split_of(r["group"]) for r in rows]
    if any(f != r["split"] for f, r in zip(final, rows)):
        _rebuild(staging, out_dir, rows, final, params)
    else:
        for w in writers.values():
            for name in w.shard_names:
                os.replace(staging / name, out_dir / name)
    shutil.rmtree(staging)


def _stage_metrics(n_sources: int, manifest: pd.DataFrame, rejects: pd.DataFrame, image_size: int, workers: int,
                   seconds: float) -> dict[str, Any]:
    failed = rejects[~rejects["reason"].isin(["grayscale", "monochrome", "duplicate"])]
    kept = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    n_colorless = int((rejects["reason"].isin(["grayscale", "monochrome"])).sum())
    return {
        "sources": n_sources,
        "kept": {**kept, "total": len(manifest)},
        "rejected": {"total": len(failed), "by_reason": dict(sorted(Counter(failed["reason"]).items()))},
        "grayscale_excluded": int((rejects["reason"] == "grayscale").sum()),
        "monochrome_excluded": int((rejects["reason"] == "monochrome").sum()),
        "duplicates_removed": int((rejects["reason"] == "duplicate").sum()),
        "image_size": image_size,
        # how this machine did, not what the data is: the stage logs it outside the metrics
        "timing": {
            "workers": workers,
            "seconds": round(seconds, 3),
            "files_per_s": round(n_sources / seconds, 1),
            "images_per_s": round((len(manifest) + n_colorless) / seconds, 1),  # crops made, kept or not
        },
    }


def _keep(src: Source, image_id: str, res: _Decoded, params: DataParams, splits: SplitAssigner,
          writers: dict[str, ShardWriter], rows: list[dict[str, Any]], dropped: list[dict[str, str]]) -> None:
    # Color is judged per crop: a gray crop teaches desaturation as much as a gray photo.
    split = splits.split_of(src.group)  # provisional: a later duplicate may merge this group
    for k in range(len(res.color.mean_chroma)):
        crop_id = image_id if src.crops == 1 else f"{image_id}_c{k}"
        chroma = float(res.color.mean_chroma[k])
        verdict = ("grayscale", "stored in a grayscale mode") if res.image.gray_mode else color_verdict(
            res.color, k, color_chroma=params.color_chroma, min_color_fraction=params.min_color_fraction,
            min_hue_spread=params.min_hue_spread)
        if verdict is not None:
            dropped.append({"path": src.path if src.crops == 1 else f"{src.path}#{k}", "reason": verdict[0],
                            "detail": verdict[1]})
            continue
        [(shard, row)] = writers[split].add([crop_id], res.L[k:k + 1], res.ab[k:k + 1])
        rows.append({"id": crop_id, "path": src.path, "group": src.group, "split": split, "shard": shard,
                     "row": row, "width": res.image.width, "height": res.image.height,
                     "colorfulness": chroma, "label": src.label or None, "crop": k})


def _rebuild(staging: Path, out_dir: Path, rows: list[dict[str, Any]], final: list[str],
             params: DataParams) -> None:
    # A late duplicate merged groups already written under another split: rewrite the
    # shards in final split order (rare; the common case just renames the staged files).
    staged = {name: _read_shard_arrays(staging / name) for name in {r["shard"] for r in rows}}
    writers = {s: ShardWriter(out_dir, s, params.shard_size, params.image_size) for s in SPLITS}
    for r, split in zip(rows, final):
        L, ab = staged[r["shard"]]
        [(r["shard"], r["row"])] = writers[split].add([r["id"]], L[r["row"]:r["row"] + 1], ab[r["row"]:r["row"] + 1])
        r["split"] = split
    for w in writers.values():
        w.close()


def _write_manifest(out_dir: Path, rows: list[dict[str, Any]], params: DataParams) -> pd.DataFrame:
    columns = ["id", "path", "group", "split", "shard", "row", "width", "height", "colorfulness", "label", "crop"]
    manifest = pd.DataFrame(rows, columns=columns).astype(
        {"id": str, "path": str, "group": str, "split": str, "shard": str, "row": "int64", "width": "int64",
         "height": "int64", "colorfulness": "float64", "label": object, "crop": "int64"})
    order = {s: i for i, s in enumerate(SPLITS)}
    manifest = manifest.sort_values(["split", "shard", "row"], key=lambda c: c.map(order) if c.name == "split" else c)
    manifest = manifest.reset_index(drop=True)
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    info = {"format": FORMAT, "image_size": params.image_size, "precision": "float16"}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"colorstudy": json.dumps(info).encode()})
    pq.write_table(table, out_dir / MANIFEST)
    return manifest
