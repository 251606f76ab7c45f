"""Lab shards: the preprocess stage's writer, its manifest, and the reader training uses.

**Layout** of an output dir (``data/shards``)::

    train-00000.arrow ...   one Arrow IPC file per ``shard_size`` images of a split,
    val-00000.arrow ...     uncompressed so it memory-maps; columns ``id`` (string),
    test-00000.arrow ...    ``L`` ([1, S, S]) and ``ab`` ([2, S, S]) as fixed-size float16 lists
    manifest.parquet        one row per stored image: id, path, group, split, shard, row,
                            width, height (full photo), colorfulness (mean chroma), label, crop
    rejects.csv             one row per dropped file or crop: path, reason, detail; reasons
                            are images.REJECT_REASONS, ``grayscale``, ``monochrome``
                            (images.color_verdict) and ``duplicate``

Lab values are stored in Lab units (L in [0, 100], ab roughly [-128, 127]) as float16:
11 significant bits, so the rounding error is at most 0.0625 Lab units anywhere in that
range (half a float16 step, 0.03125, in practice). The reader normalizes once, on load.

**Splits** are decided per source *group* (all crops, stereo pairs and copies of one
photo share a group), so nothing of one photo lands in two splits. A group's split is
the ``split`` column of ``sources.csv`` when ``data.split`` is ``official`` or the
dataset fixes its split (``sample``), for the rows that fill it; otherwise a hash of
(seed, group) mapped to [0, 1) against the test and val fractions, so adding photos
never moves existing ones. Exact duplicates (same file bytes, or same decoded pixels:
a copy that differs only in metadata) keep only their first copy (sorted by path) and
merge their groups; a merged group takes the split of its lexicographically first
member. Pixels are hashed at decode scale, so a JPEG and a lossless re-encoding of it
match only when no reduced-scale JPEG decode was needed.

**Reader**: :class:`LabShards` memory-maps the shards and builds whole-split tensors
(normalized float32, optionally on the GPU); :class:`Batches` slices batches from
them with no per-item Python work.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from colorstudy.config import DataParams, ParamsError
from colorstudy.data.images import ColorStats, DecodedImage, Reject, color_stats, color_verdict, crop_seed, decode_image
from colorstudy.data.sources import SOURCES_CSV, SPLITS, Source, read_sources
from colorstudy.lab import normalize_ab, normalize_l, rgb_to_lab_np

FIXED_SPLIT_DATASETS = frozenset({"sample"})  # sources whose sources.csv split is part of the data
FORMAT = "colorstudy-lab-shards/1"
MANIFEST = "manifest.parquet"
REJECTS = "rejects.csv"
_STAGING = ".staging"
# Crops per worker task (whole sources, at least one). Fixed, not derived from the worker
# count, so batched Lab conversion sees the same batches, and writes the same bytes, anywhere.
CHUNK = 16
_WRITE_BATCH = 64  # rows per Arrow record batch
# Bytes of float32 converted at a time on load: small enough (glibc maps blocks over 32 MB
# afresh, zeroing every page) to be recycled, large enough to amortize each op's launch.
_CONVERT_BYTES = 8 << 20


# -- sources and splits --------------------------------------------------------------

def load_sources(raw_dir: str | Path, params: DataParams) -> list[Source]:
    """``sources.csv`` of ``raw_dir`` sorted by path, cut to the first ``params.max_images``."""
    rows = sorted(read_sources(Path(raw_dir)), key=lambda r: r.path)
    bad = [r.path for r in rows if r.split not in ("", *SPLITS) or r.crops < 1]
    if bad:
        raise ValueError(f"{Path(raw_dir) / SOURCES_CSV}: bad split or crops for {bad[:3]}")
    return rows if params.max_images is None else rows[:params.max_images]


def _image_ids(paths: Sequence[str]) -> list[str]:
    # File-name-safe ids (evaluation writes `<id>.png`); the extension is kept only
    # where dropping it would make two ids equal.
    bases = [str(PurePosixPath(p).with_suffix("")).replace("/", "__") for p in paths]
    counts = Counter(bases)
    return [b if counts[b] == 1 else p.replace("/", "__") for b, p in zip(bases, paths)]


def hash_split(group: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Split of a group by the hash of (seed, group): stable under additions of other photos."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


class SplitAssigner:
    """Split per group, with duplicate-merged groups (union-find; a root is its component's minimum)."""

    def __init__(self, sources: Sequence[Source], params: DataParams) -> None:
        honor = params.split == "official" or params.dataset in FIXED_SPLIT_DATASETS
        if params.split == "official" and not any(s.split for s in sources):
            raise ParamsError(f"data.split: `official` needs a dataset whose {SOURCES_CSV} fills the "
                              f"split column (flowers102, sample); {params.dataset!r} has none, use `random`")
        self._own: dict[str, str] = {}
        for s in sources:  # sorted by path: a group's first explicit split wins
            if honor and s.split and s.group not in self._own:
                self._own[s.group] = s.split
        for s in sources:
            if s.group not in self._own:
                self._own[s.group] = hash_split(s.group, params.seed, params.val_fraction, params.test_fraction)
        self._parent: dict[str, str] = {}

    def _root(self, group: str) -> str:
        while (parent := self._parent.get(group, group)) != group:
            self._parent[group] = self._parent.get(parent, parent)  # path halving
            group = parent
        return group

    def merge(self, a: str, b: str) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self._parent[hi] = lo

    def split_of(self, group: str) -> str:
        return self._own[self._root(group)]


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


# -- writing --------------------------------------------------------------------------

def shard_schema(image_size: int) -> pa.Schema:
    n = image_size * image_size
    return pa.schema(
        [("id", pa.string()), ("L", pa.list_(pa.float16(), n)), ("ab", pa.list_(pa.float16(), 2 * n))],
        metadata={b"format": FORMAT.encode(), b"image_size": str(image_size).encode()},
    )


class ShardWriter:
    """Appends images of one split to ``<split>-NNNNN.arrow`` files of ``shard_size`` rows each."""

    def __init__(self, directory: str | Path, split: str, shard_size: int, image_size: int) -> None:
        self.directory = Path(directory)
        self.split = split
        self.shard_size = shard_size
        self.schema = shard_schema(image_size)
        self.shard_names: list[str] = []
        self._sink: ipc.RecordBatchFileWriter | None = None
        self._rows = shard_size  # the first add opens shard 0
        self._buffer: list[tuple[str, np.ndarray, np.ndarray]] = []

    def add(self, ids: Sequence[str], L: np.ndarray, ab: np.ndarray) -> list[tuple[str, int]]:
        """Queue rows (float16 ``L`` [n, 1, S, S], ``ab`` [n, 2, S, S]); returns (shard, row) of each."""
        where = []
        for i, image_id in enumerate(ids):
            if self._rows == self.shard_size:
                self._open_next()
            self._buffer.append((image_id, L[i], ab[i]))
            where.append((self.shard_names[-1], self._rows))
            self._rows += 1
            if len(self._buffer) >= _WRITE_BATCH:
                self._flush()
        return where

    def _open_next(self) -> None:
        self._close_current()
        name = f"{self.split}-{len(self.shard_names):05d}.arrow"
        self.shard_names.append(name)
        self._sink = ipc.new_file(str(self.directory / name), self.schema)  # uncompressed: memory-mappable
        self._rows = 0

    def _flush(self) -> None:
        if not self._buffer:
            return
        assert self._sink is not None
        ids, Ls, abs_ = zip(*self._buffer)
        columns = [pa.array(ids, pa.string())]
        for arrays, field in zip((Ls, abs_), self.schema.types[1:]):
            flat = pa.array(np.stack(arrays).astype(np.float16, copy=False).reshape(-1))
            columns.append(pa.FixedSizeListArray.from_arrays(flat, field.list_size))
        self._sink.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self._buffer = []

    def _close_current(self) -> None:
        self._flush()
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def close(self) -> None:
        self._close_current()


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

    final = [splits.split_of(r["group"]) for r in rows]
    if any(f != r["split"] for f, r in zip(final, rows)):
        _rebuild(staging, out_dir, rows, final, params)
    else:
        for w in writers.values():
            for name in w.shard_names:
                os.replace(staging / name, out_dir / name)
    shutil.rmtree(staging)

    manifest = _write_manifest(out_dir, rows, params)
    rejects = pd.DataFrame(dropped, columns=["path", "reason", "detail"])
    rejects.to_csv(out_dir / REJECTS, index=False)
    seconds = time.perf_counter() - start
    failed = rejects[~rejects["reason"].isin(["grayscale", "monochrome", "duplicate"])]
    kept = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    n_colorless = int((rejects["reason"].isin(["grayscale", "monochrome"])).sum())
    return {
        "sources": len(sources),
        "kept": {**kept, "total": len(manifest)},
        "rejected": {"total": len(failed), "by_reason": dict(sorted(Counter(failed["reason"]).items()))},
        "grayscale_excluded": int((rejects["reason"] == "grayscale").sum()),
        "monochrome_excluded": int((rejects["reason"] == "monochrome").sum()),
        "duplicates_removed": int((rejects["reason"] == "duplicate").sum()),
        "image_size": params.image_size,
        # how this machine did, not what the data is: the stage logs it outside the metrics
        "timing": {
            "workers": workers if pool else 1,
            "seconds": round(seconds, 3),
            "files_per_s": round(len(sources) / seconds, 1),
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


# -- reading --------------------------------------------------------------------------

def _iter_shard(path: Path) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """Record batches of a shard as (ids, L, ab): float16 numpy views of the memory map, no copy."""
    reader = ipc.open_file(pa.memory_map(str(path)))
    size = int(reader.schema.metadata[b"image_size"])
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        n = batch.num_rows
        L = batch.column("L").flatten().to_numpy(zero_copy_only=True).reshape(n, 1, size, size)
        ab = batch.column("ab").flatten().to_numpy(zero_copy_only=True).reshape(n, 2, size, size)
        yield batch.column("id").to_pylist(), L, ab


def _read_shard_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = list(_iter_shard(path))
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # The memory map is read-only; the tensor is converted (copied) before anyone writes.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)


class LabShards:
    """The preprocess stage's output dir: manifest rows and whole-split Lab tensors."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta = pq.read_schema(self.root / MANIFEST).metadata or {}
        info = json.loads(meta.get(b"colorstudy", b"{}"))
        if info.get("format") != FORMAT:
            raise ValueError(f"{self.root / MANIFEST}: not a {FORMAT} manifest (re-run the preprocess stage)")
        self.image_size: int = int(info["image_size"])
        self.manifest: pd.DataFrame = pd.read_parquet(self.root / MANIFEST)

    def __len__(self) -> int:
        return len(self.manifest)

    def fingerprint(self) -> str:
        """sha256 over the manifest and every shard's bytes: which data a checkpoint saw."""
        digest = hashlib.sha256()
        for path in [self.root / MANIFEST, *(self.root / s for s in sorted(set(self.manifest["shard"])))]:
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()

    def rows(self, split: str) -> pd.DataFrame:
        """Manifest rows of ``split`` in tensor order (row ``i`` describes ``L[i]``)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        part = self.manifest[self.manifest["split"] == split]
        return part.sort_values(["shard", "row"]).reset_index(drop=True)

    def split(self, name: str, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Whole split as normalized float32 ``(L_n [N,1,S,S], ab_n [N,2,S,S])`` on ``device``.

        Shards are memory-mapped; each record batch moves as float16 (half the bytes to
        a GPU) and is converted and normalized once, in place of its slot in the output.
        """
        rows = self.rows(name)
        n, s = len(rows), self.image_size
        L = torch.empty((n, 1, s, s), dtype=torch.float32, device=device)
        ab = torch.empty((n, 2, s, s), dtype=torch.float32, device=device)
        step = max(1, _CONVERT_BYTES // (2 * s * s * 4))  # rows per conversion
        at = 0
        for shard in dict.fromkeys(rows["shard"]):
            for ids, L16, ab16 in _iter_shard(self.root / shard):
                expected = rows["id"].iloc[at:at + len(ids)].tolist()
                if ids != expected:
                    raise ValueError(f"{self.root / shard} does not match {MANIFEST} (stale shards? re-run preprocess)")
                for i in range(0, len(ids), step):
                    part = slice(i, min(i + step, len(ids)))
                    dest = slice(at + part.start, at + part.stop)
                    L[dest] = normalize_l(_as_tensor(L16[part]).to(device).float())
                    ab[dest] = normalize_ab(_as_tensor(ab16[part]).to(device).float())
                at += len(ids)
        if at != n:
            raise ValueError(f"{self.root}: {name} shards hold {at} images, {MANIFEST} lists {n}")
        return L, ab

    def batches(self, name: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, reuse_buffers: bool = False,
                device: str | torch.device = "cpu") -> Batches:
        """A re-iterable batch loader over the whole split, resident on ``device`` (see :class:`Batches`)."""
        L, ab = self.split(name, device=device)
        return Batches(L, ab, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                       reuse_buffers=reuse_buffers)


class Batches:
    """Batches ``(L_n, ab_n)`` of resident tensors: one index gather per batch, nothing per item.

    Each pass (``iter``) is one epoch; with ``shuffle`` its order is a permutation from a
    ``torch.Generator`` seeded by (seed, epoch), so epoch ``e`` has the same order whether
    or not the run was resumed: call :meth:`set_epoch` before iterating after a resume.
    Without ``shuffle``, batches are views (no copy) in stored order.

    ``reuse_buffers`` (shuffled CPU batches): gather into two preallocated buffers taken in
    turn instead of fresh tensors, about 3x faster at 256 px, where a fresh 64-image ab
    batch (> 32 MB) is new memory the kernel maps and zeroes every time. A batch is then
    only valid until the second next one is drawn: right for a loop that consumes each
    batch in its own step, wrong for one that keeps batches (``list(batches)``). A graph
    still holding an overwritten batch fails loudly in backward (version counter).
    """

    def __init__(self, L: torch.Tensor, ab: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, reuse_buffers: bool = False) -> None:
        if len(L) != len(ab):
            raise ValueError(f"L has {len(L)} images, ab {len(ab)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.L, self.ab = L, ab
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.reuse_buffers = reuse_buffers
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.L)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor | None:
        """The permutation used in ``epoch`` (None without shuffle)."""
        if not self.shuffle:
            return None
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self.L), generator=generator).to(self.L.device)

    def _gather(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.reuse_buffers:
            return self.L[idx], self.ab[idx]
        if not self._buffers:
            self._buffers = [(self.L.new_empty((self.batch_size, *self.L.shape[1:])),
                              self.ab.new_empty((self.batch_size, *self.ab.shape[1:]))) for _ in range(2)]
        bl, bab = self._buffers[step % 2]
        n = len(idx)
        # the kernel of `L[idx]`, with an output; index_select's CPU kernel slows down badly
        # with 2+ threads on a busy machine
        index_out = torch.ops.aten.index.Tensor_out
        return index_out(self.L, [idx], out=bl[:n]), index_out(self.ab, [idx], out=bab[:n])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(self.epoch)
        self.epoch += 1
        stop = len(self) * self.batch_size if self.drop_last else len(self.L)
        for step, start in enumerate(range(0, stop, self.batch_size)):
            if order is None:
                yield self.L[start:start + self.batch_size], self.ab[start:start + self.batch_size]
            else:
                yield self._gather(order[start:start + self.batch_size], step)
