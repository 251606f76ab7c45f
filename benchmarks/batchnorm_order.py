"""Does the training split's storage order change a trained model's BatchNorm statistics?

Builds a folder dataset laid out by class, as most photo sets are (``faces/`` with the
shared faces, then one folder per Oxford flower class), trains study ids with the
pipeline's own ``train_model`` and scores each final checkpoint's validation ab-L1 in
eval mode with its BatchNorm statistics recalibrated two ways on the same weights:

* ``stored``: over the training split in stored order, ``batch_size`` at a time (the
  recalibration before issue 17: on this layout each batch holds one class);
* ``drawn``: over the epoch's batches as training drew them (what training does now).

Training itself is the same either way: recalibration touches only running statistics,
which train-mode BatchNorm ignores, and draws no RNG.

    python benchmarks/batchnorm_order.py [--models A C] [--faces 750] [--flowers 750]
        [--size 64] [--epochs 6] [--work /tmp/bn-order]
    # the faces study's setting (one class; its committed checkpoints are not kept):
    python benchmarks/batchnorm_order.py --folder ../shared/datasets/faces --holdout 0.15 \
        --epochs 16 --work /tmp/bn-order-faces
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import time
from pathlib import Path

import torch

from colorstudy.checkpoint import Checkpoint
from colorstudy.config import DataParams, load_params
from colorstudy.data.loader import ResidentSplit
from colorstudy.data.preprocess import preprocess
from colorstudy.data.shards import LabShards
from colorstudy.data.sources import materialize
from colorstudy.study import resolve_model
from colorstudy.train import epoch_inputs, recalibrate_batchnorm, train_model, validate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def class_sorted_folder(out: Path, faces: int, flowers: int) -> Path:
    """Links (no copies) to the shared photos in class folders: ``face/``, then ``flower_NNN/``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "face").mkdir(exist_ok=True)
    for src in sorted((SHARED / "faces").glob("*.jpg"))[:faces]:
        link = out / "face" / src.name
        if not link.exists():
            link.symlink_to(src)
    with open(SHARED / "flowers102-subset" / "labels.csv", newline="") as f:
        rows = sorted(list(csv.reader(f))[1:])[:flowers]
    for name, class_id in rows:
        folder = out / f"flower_{int(class_id):03d}"
        folder.mkdir(exist_ok=True)
        if not (folder / name).exists():
            (folder / name).symlink_to(SHARED / "flowers102-subset" / name)
    return out


def val_ab_l1(generator: torch.nn.Module, val: ResidentSplit, batches, batch_size: int) -> float:
    recalibrate_batchnorm(generator, batches, torch.device("cpu"))
    return validate(generator, val.chunks(batch_size), torch.device("cpu"))["ab_l1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["A", "C"])
    ap.add_argument("--faces", type=int, default=750)
    ap.add_argument("--flowers", type=int, default=750)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bn-order"))
    ap.add_argument("--folder", type=Path, help="photos to use as they are stored (default: the class-sorted set)")
    ap.add_argument("--holdout", type=float, default=0.1, help="val and test fraction each")
    args = ap.parse_args()

    photos = args.folder or class_sorted_folder(args.work / "photos", args.faces, args.flowers)
    data = DataParams(dataset="folder", path=str(photos), image_size=args.size, val_fraction=args.holdout,
                      test_fraction=args.holdout)
    shards_dir = args.work / "shards"
    if not (shards_dir / "manifest.parquet").exists():
        materialize(args.work / "raw", data)
        preprocess(args.work / "raw", shards_dir, data, progress=False)
    shards = LabShards(shards_dir)
    train, val = ResidentSplit(shards, "train", torch.device("cpu")), ResidentSplit(shards, "val", torch.device("cpu"))
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["data"]["image_size"] = args.size
    params["train"].update(epochs=args.epochs, decay_epochs=args.epochs // 2, device="cpu")
    gray = val.ab.abs().mean().item()
    results = {"photos": str(args.folder) if args.folder else {"faces": args.faces, "flowers": args.flowers},
               "image_size": args.size,
               "epochs": args.epochs, "train": len(train), "val": len(val), "gray_val_ab_l1": gray, "models": {}}
    for model_id in args.models:
        run = resolve_model(params, model_id)
        start = time.perf_counter()
        out = args.work / "models" / model_id
        if not (out / "last.pt").exists():
            train_model(run, shards_dir, out, args.work / "logs" / model_id)
        generator = Checkpoint.load(out / "last.pt").model()
        b, steps = run.train.batch_size, len(train) // run.train.batch_size
        last_epoch = run.train.epochs - 1
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.train.seed * 1000 + last_epoch))
        results["models"][model_id] = {
            "stored_order": val_ab_l1(generator, val, (L for L, _ in train.chunks(b)), b),
            "as_drawn": val_ab_l1(generator, val, epoch_inputs(train, order, b, steps), b),
            "train_seconds": round(time.perf_counter() - start, 1),
        }
        print(model_id, json.dumps(results["models"][model_id]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
