"""Data throughput: the preprocess stage, the shard reader, and a per-item loader for scale.

    python benchmarks/data_throughput.py [--images N] [--size 256] [--per-item-images 640]

(a) preprocess: decode + clean + Lab + write shards of the shared flowers subset
    (all 2,493 photos unless --images), images/s;
(b) shard reader: shuffled batches of 64 as training draws them (``data.loader``): the
    train split resident (fresh tensors, or two reused buffers) and streamed from the
    memory-mapped shards, images/s;
(c) the common per-item loader on the same photos: a torch Dataset whose __getitem__
    opens the file with PIL, resizes and crops, and converts with skimage's rgb2lab,
    batched by a DataLoader (batch 64, shuffled, one worker per core);
and the ratio (b)/(c).

Each figure comes twice: by wall clock, and by CPU time (this process and its worker
processes, user + system). On a shared machine the wall clock measures the neighbours
too; images per CPU-second times the core count is what an idle machine would reach.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2lab
from torch.utils.data import DataLoader, Dataset

from colorstudy.config import DataParams
from colorstudy.data.loader import EpochBatches, ResidentSplit, StreamedSplit
from colorstudy.data.preprocess import preprocess
from colorstudy.data.shards import LabShards
from colorstudy.data.sources import Source, write_sources
from colorstudy.lab import normalize_ab, normalize_l

ROOT = Path(__file__).resolve().parents[1]
FLOWERS = ROOT.parent / "shared" / "datasets" / "flowers102-subset"
BATCH = 64


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool and DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Timer:
    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu

    def rates(self, n: int) -> str:
        return f"{n / self.wall:,.0f} images/s wall, {n / self.cpu:,.0f} per CPU-second"


class PerItemLab(Dataset):
    """The usual colorization dataset: all the work per item, every epoch."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        im = Image.open(self.paths[i]).convert("RGB")
        scale = self.size / min(im.size)
        im = im.resize((max(self.size, round(im.width * scale)), max(self.size, round(im.height * scale))),
                       Image.Resampling.LANCZOS)
        left, top = (im.width - self.size) // 2, (im.height - self.size) // 2
        im = im.crop((left, top, left + self.size, top + self.size))
        lab = torch.from_numpy(rgb2lab(np.asarray(im)).astype(np.float32)).permute(2, 0, 1)
        return normalize_l(lab[:1]), normalize_ab(lab[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="first N flowers (default: all)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--per-item-images", type=int, default=640, help="images the per-item loader is timed on")
    ap.add_argument("--epochs", type=int, default=3, help="reader epochs timed")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    files = sorted(FLOWERS.glob("image_*.jpg"))[: args.images]
    print(f"{len(files)} flower photos at {args.size}x{args.size}, {cores} CPU cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "shards"
        raw.mkdir()
        for f in files:
            (raw / f.name).symlink_to(f)
        write_sources(raw, [Source(f.name, f.stem) for f in files])
        params = DataParams(dataset="flowers102", image_size=args.size)
        with Timer() as t:
            m = preprocess(raw, out, params, progress=False)
        print(f"(a) preprocess: {m['sources']} photos in {t.wall:.1f} s: {t.rates(m['sources'])} "
              f"(x {cores} cores = {m['sources'] / t.cpu * cores:,.0f} images/s on idle cores); {m['timing']['workers']} workers, "
              f"kept {m['kept']['total']}, gray {m['grayscale_excluded']}, duplicates {m['duplicates_removed']}, "
              f"rejected {m['rejected']['total']}")

        shards = LabShards(out)
        with Timer() as load:
            resident = ResidentSplit(shards, "train", torch.device("cpu"))
        print(f"(b) shard reader: {len(resident)} train images made resident in {load.wall:.2f} s "
              f"({load.cpu:.2f} CPU-s, once per training run); shuffled batches of {BATCH} as training "
              f"draws them (data.loader.EpochBatches), {args.epochs} epochs:")
        reader = {}
        threads = torch.get_num_threads()
        steps = len(resident) // BATCH
        for n_threads in sorted({1, threads}):
            torch.set_num_threads(n_threads)
            for data, reuse in ((resident, False), (resident, True), (StreamedSplit(shards, "train", torch.device("cpu")), False)):
                n = steps * BATCH * args.epochs
                with Timer() as t:
                    for epoch in range(args.epochs):
                        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
                        for L, ab in EpochBatches(data, order, BATCH, steps, reuse_buffers=reuse):
                            assert L.shape[0] == BATCH
                kind = "streamed from the shards" if data.streamed else f"resident, reuse_buffers={reuse}"
                key = f"torch threads {n_threads}, {kind}"
                reader[key] = (n / t.wall, n / t.cpu)
                print(f"    {key}: {t.rates(n)}")
        torch.set_num_threads(threads)
        del resident

        train_paths = [raw / p for p in shards.rows("train")["path"][: args.per_item_images]]
        per_item = DataLoader(PerItemLab(train_paths, args.size), batch_size=BATCH, shuffle=True,
                              num_workers=cores, generator=torch.Generator().manual_seed(0))
        seen = 0
        with Timer() as t:
            for L, ab in per_item:
                seen += len(L)
        item_wall, item_cpu = seen / t.wall, seen / t.cpu
        print(f"(c) per-item loader (PIL + skimage rgb2lab, DataLoader batch {BATCH}, {cores} workers) on {seen} "
              f"of the same images: {t.rates(seen)}")
        for key, (wall, cpu) in reader.items():
            print(f"ratio (b)/(c), {key}: {wall / item_wall:,.0f}x by wall clock, "
                  f"{cpu / item_cpu:,.0f}x per CPU-second (goal >= 50x)")


if __name__ == "__main__":
    main()
