"""Training data on the device: a split resident in memory, or streamed from its shards.

A split that fits the memory budget is converted once into normalized float32 tensors on
the training device (:class:`ResidentSplit`) and every batch is one index gather. One that
does not is left in the memory-mapped shards (:class:`StreamedSplit`): each batch is
gathered from the float16 maps on the CPU by a background thread, pinned when the
device is a GPU, and normalized where it lands. Both give the same values for the same
indices (the same float16 -> float32 -> normalize steps), so which one ran does not
change what training computes; :func:`load_split` decides and says which.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colorstudy.data.shards import LabShards, _as_tensor, _iter_shard
from colorstudy.lab import normalize_ab, normalize_l

# Share of free memory (GPU memory, or RAM for CPU training) a resident split may take:
# the rest is the model's, its activations' and the other split's.
BUDGET_SHARE = 0.5
PREFETCH = 3  # batches gathered ahead of the step that consumes them


def available_memory(device: torch.device) -> int:
    """Bytes free for data on ``device`` now."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: total RAM is the best cheap guess
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_bytes(n: int, image_size: int) -> int:
    """float32 L and ab of ``n`` images."""
    return n * 3 * image_size * image_size * 4


class ResidentSplit:
    """A whole split as normalized float32 tensors on the device."""

    streamed = False

    def __init__(self, shards: LabShards, name: str, device: torch.device) -> None:
        self.L, self.ab = shards.split(name, device=device)
        self.device = device

    def __len__(self) -> int:
        return len(self.L)

    def fetch(self, idx: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx``; into ``out`` (preallocated batch buffers) when given."""
        if out is None:
            return self.L[idx], self.ab[idx]
        # the kernel of `L[idx]`, with an output; index_select's CPU kernel slows down badly
        # with 2+ threads on a busy machine
        index_out = torch.ops.aten.index.Tensor_out
        n = len(idx)
        return index_out(self.L, [idx], out=out[0][:n]), index_out(self.ab, [idx], out=out[1][:n])

    def chunks(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in stored order, ``batch_size`` images at a time (views, no copy)."""
        for i in range(0, len(self), batch_size):
            yield self.L[i:i + batch_size], self.ab[i:i + batch_size]


class StreamedSplit:
    """A split left in its memory-mapped float16 shards; batches are gathered on demand."""

    streamed = True

    def __init__(self, shards: LabShards, name: str, device: torch.device) -> None:
        rows = shards.rows(name)
        self.device = device
        L_parts, ab_parts, ids = [], [], []
        for shard in dict.fromkeys(rows["shard"]):
            for batch_ids, L16, ab16 in _iter_shard(Path(shards.root) / shard):
                ids += batch_ids
                L_parts.append(L16)
                ab_parts.append(ab16)
        if ids != rows["id"].tolist():
            raise ValueError(f"{shards.root}: {name} shards do not match the manifest (stale shards? re-run preprocess)")
        # Record-batch views of the maps, and where each starts: a gather touches only the
        # pages of the images it takes.
        self._L, self._ab = L_parts, ab_parts
        self._starts = np.cumsum([0] + [len(p) for p in L_parts])
        self._n = int(self._starts[-1])

    def __len__(self) -> int:
        return self._n

    def gather_host(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float16 ``(L, ab)`` of ``idx`` in host memory, pinned when training on a GPU."""
        idx_np = idx.cpu().numpy()
        part = np.searchsorted(self._starts, idx_np, side="right") - 1
        s = self._L[0].shape[-1]
        L = np.empty((len(idx_np), 1, s, s), np.float16)
        ab = np.empty((len(idx_np), 2, s, s), np.float16)
        for p in np.unique(part):
            where = np.nonzero(part == p)[0]
            local = idx_np[where] - self._starts[p]
            L[where], ab[where] = self._L[p][local], self._ab[p][local]
        L_t, ab_t = _as_tensor(L), _as_tensor(ab)
        if self.device.type == "cuda":
            L_t, ab_t = L_t.pin_memory(), ab_t.pin_memory()
        return L_t, ab_t

    def to_device(self, L16: torch.Tensor, ab16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`ResidentSplit.fetch` returns for the same images, bit for bit."""
        L = L16.to(self.device, non_blocking=True).float()
        ab = ab16.to(self.device, non_blocking=True).float()
        return normalize_l(L), normalize_ab(ab)

    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_device(*self.gather_host(idx))

    def chunks(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.fetch(torch.arange(i, min(i + batch_size, len(self))))


SplitData = ResidentSplit | StreamedSplit


def load_split(shards: LabShards, name: str, device: torch.device, budget_bytes: int | None = None,
               processes_per_device: int = 1) -> SplitData:
    """The split resident when it fits ``budget_bytes`` (default: a share of free memory), else streamed.

    ``processes_per_device``: data-parallel processes sharing this memory (CPU ranks
    share the RAM; each GPU rank has its own device).
    """
    n = int((shards.manifest["split"] == name).sum())
    need = resident_bytes(n, shards.image_size)
    if budget_bytes is None:
        budget_bytes = int(available_memory(device) * BUDGET_SHARE) // processes_per_device
    if need <= budget_bytes:
        return ResidentSplit(shards, name, device)
    print(f"{name} split: {n} images need {need / 2**30:.2f} GiB as float32 on {device}, over the "
          f"{budget_bytes / 2**30:.2f} GiB budget: streaming batches from the memory-mapped shards")
    return StreamedSplit(shards, name, device)


@dataclass
class EpochBatches:
    """One epoch's batches for one data-parallel rank.

    ``order`` is the epoch's permutation of the whole split, the same on every rank;
    global batch ``i`` is ``order[i*B:(i+1)*B]`` and rank ``r`` of ``world`` takes its
    ``r``-th contiguous share, so the union over ranks is the single-process batch.
    A streamed split is gathered ``PREFETCH`` batches ahead by a background thread;
    ``wait_seconds`` is how long the loop waited for data.

    ``reuse_buffers`` (a resident split on the CPU): gather into two preallocated
    buffers taken in turn instead of fresh tensors, about 3x faster at 256 px, where a
    fresh 64-image ab batch (> 32 MB) is new memory the kernel maps and zeroes every
    time. A batch is then valid only until the second next one is drawn: right for a
    loop that consumes each batch in its own step, wrong for ``list(batches)``.
    """

    data: SplitData
    order: torch.Tensor
    batch_size: int
    steps: int
    rank: int = 0
    world: int = 1
    reuse_buffers: bool = False
    wait_seconds: float = 0.0

    def local_indices(self, step: int, order: torch.Tensor | None = None) -> torch.Tensor:
        share = self.batch_size // self.world
        start = step * self.batch_size + self.rank * share
        return (self.order if order is None else order)[start:start + share]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.data, ResidentSplit):
            buffers = self._buffers(self.data) if self.reuse_buffers else None
            for step in range(self.steps):
                yield self.data.fetch(self.local_indices(step), buffers[step % 2] if buffers else None)
            return
        yield from self._prefetched(self.data)

    def _buffers(self, data: ResidentSplit) -> list[tuple[torch.Tensor, torch.Tensor]]:
        share = self.batch_size // self.world
        return [(data.L.new_empty((share, *data.L.shape[1:])), data.ab.new_empty((share, *data.ab.shape[1:])))
                for _ in range(2)]

    def _prefetched(self, data: StreamedSplit) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH)
        stop = threading.Event()
        order = self.order.cpu()

        def produce() -> None:
            try:
                for step in range(self.steps):
                    if stop.is_set():
                        return
                    ready.put(data.gather_host(self.local_indices(step, order)))
            except BaseException as e:  # re-raised in the training loop, not lost in the thread
                ready.put(e)

        worker = threading.Thread(target=produce, name="colorstudy-prefetch", daemon=True)
        worker.start()
        try:
            for _ in range(self.steps):
                start = time.perf_counter()
                item = ready.get()
                self.wait_seconds += time.perf_counter() - start
                if isinstance(item, BaseException):
                    raise item
                yield data.to_device(*item)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)
