"""Lab shards: the on-disk format the preprocess stage writes, and its reader.

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

**Reader**: :class:`LabShards` memory-maps the shards and builds whole-split tensors
(normalized float32, optionally on the GPU); ``colorstudy.data.loader`` batches them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch

from colorstudy.data.sources import SPLITS
from colorstudy.lab import normalize_ab, normalize_l

FORMAT = "colorstudy-lab-shards/1"
MANIFEST = "manifest.parquet"
REJECTS = "rejects.csv"
_WRITE_BATCH = 64  # rows per Arrow record batch
# Bytes of float32 converted at a time on load: small enough (glibc maps blocks over 32 MB
# afresh, zeroing every page) to be recycled, large enough to amortize each op's launch.
_CONVERT_BYTES = 8 << 20


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
