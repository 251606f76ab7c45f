"""One GPU check: training throughput and MFU of the full-size U-Net, then a small study
on the GPU set beside the committed CPU study.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--steps 30] [--batch 32]
                                   [--study-models A B C] [--dry]

1. **Throughput**: the study's own training loop (``train.train_epoch``: augmentation,
   learning-rate schedule, finite check, Adam) on the full-size U-Net (width 64, depth 8,
   54 M parameters) at 256x256 in bf16 autocast with channels_last, model A's L1
   objective, on real photos (``--photos``, the shared faces, upscaled to 256 px) read by
   the training data path, both resident on the GPU and streamed from the shards. It
   writes images/s, achieved TFLOP/s (forward + backward FLOPs counted by
   ``torch.utils.flop_counter`` on one step), MFU (that over the device's dense bf16
   peak, when the device is one this file knows), the share of step time spent waiting
   for data, and peak memory.
2. **Study**: ``--study-models`` of the default ``params.yaml`` trained and evaluated on
   the GPU from the sample dataset, each ``reports/eval/<id>/metrics.json`` compared
   with the committed CPU one by the rules CI uses (``colorstudy.compare``: a trained
   model's metric may move by its committed bootstrap CI half-width).

``--dry`` runs every part on the CPU at toy size (32 px, width 4, 3 steps, model A for
one epoch, no comparison: the committed study is not that toy run); the test suite runs it.
The goal on a GPU: >= 40 % MFU and data never the bottleneck; the budget: under 8 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "datasets" / "faces"
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.05, "A10G": 70.0}


def device_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def make_shards(photos: Path, out: Path, size: int, max_images: int | None) -> Path:
    from colorstudy.config import DataParams
    from colorstudy.data.preprocess import preprocess
    from colorstudy.data.sources import materialize

    params = DataParams(dataset="folder", path=str(photos), image_size=size, max_images=max_images)
    materialize(out / "raw", params)
    preprocess(out / "raw", out / "shards", params, progress=False)
    return out / "shards"


def flops_per_step(objective, L: torch.Tensor, ab: torch.Tensor, device: torch.device) -> float:
    """Forward + backward FLOPs of one generator step (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    from colorstudy.runtime import autocast

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device):
            loss = objective.losses["l1"](L, objective.generator(L), ab)
        loss.backward()
    objective.generator.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def throughput(shards_dir: Path, device: torch.device, size: int, width: int, batch: int, steps: int,
               streamed: bool) -> dict:
    """Timed steps of the real training loop; the first epoch (cuDNN autotuning) untimed."""
    from colorstudy.config import TrainParams
    from colorstudy.data.loader import EpochBatches, load_split
    from colorstudy.data.shards import LabShards
    from colorstudy.distributed import SINGLE
    from colorstudy.objective import build_objective
    from colorstudy.study import RunSpec
    from colorstudy.train import train_epoch

    cfg = TrainParams(epochs=2, decay_epochs=0, batch_size=batch, width=width, device=str(device))
    run = RunSpec(model_id="gpu_check", generator="unet",
                  arch_kwargs={"width": width, "depth": min(8, size.bit_length() - 1)},
                  terms={"l1": 100.0}, image_size=size, train=cfg)
    data = load_split(LabShards(shards_dir), "train", device, budget_bytes=0 if streamed else None)
    objective = build_objective(run, device)
    steps = min(steps, len(data) // batch)
    if steps < 2:
        raise SystemExit(f"{shards_dir}: {len(data)} training images make fewer than 2 batches of {batch}")
    gen = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(len(data), generator=gen, device=device)
    L, ab = data.fetch(order[:batch])
    L, ab = (x.contiguous(memory_format=torch.channels_last) for x in (L, ab)) if device.type == "cuda" else (L, ab)
    flops = flops_per_step(objective, L, ab, device)
    results = {}
    for epoch in range(2):  # epoch 0 warms up: allocator, cuDNN algorithm search, Adam state
        batches = EpochBatches(data, order, batch, steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        train_epoch(objective, cfg, batches, gen, epoch, "gpu_check", device, SINGLE)  # syncs at its end
        seconds = time.perf_counter() - start
        results = {"steps": steps, "seconds": round(seconds, 3), "images_per_s": round(steps * batch / seconds, 1),
                   "tflops": round(flops * steps / seconds / 1e12, 2),
                   "data_wait_share": round(batches.wait_seconds / seconds, 4)}
    name, peak = device_peak(device)
    results["mfu"] = round(results["tflops"] / peak, 4) if peak else None
    results["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) \
        if device.type == "cuda" else None
    results["split"] = "streamed" if data.streamed else "resident"
    return results


def study(models: list[str], device: torch.device, work: Path, dry: bool) -> dict:
    """Train and evaluate ``models`` of params.yaml on ``device``; compare with the committed run."""
    from colorstudy.compare import Comparison, compare_runs, flatten_metrics, load_metrics
    from colorstudy.config import DataParams, EvaluateParams, load_params, section
    from colorstudy.data.preprocess import preprocess
    from colorstudy.data.sources import materialize
    from colorstudy.evaluate import evaluate
    from colorstudy.study import resolve_model
    from colorstudy.train import train_model

    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["train"]["device"] = params["evaluate"]["device"] = str(device)
    if dry:
        params["data"]["image_size"] = 32
        params["train"].update(epochs=1, decay_epochs=0, width=4)
    data = section(params, "data", DataParams)
    materialize(work / "raw", data)
    preprocess(work / "raw", work / "shards", data, progress=False)
    out, committed, reproduced = {}, {}, {}
    for model_id in models:
        start = time.perf_counter()
        train_model(resolve_model(params, model_id), work / "shards", work / model_id, work / f"{model_id}-logs")
        result = evaluate(work / model_id / "selected.pt", work / "shards", section(params, "evaluate", EvaluateParams))
        path = f"reports/eval/{model_id}/metrics.json"
        reproduced[path] = flatten_metrics(json.loads(json.dumps(result.summary)))
        if (ROOT / path).is_file():
            committed.update(load_metrics({path: (ROOT / path).read_text()}))
        out[model_id] = {"seconds": round(time.perf_counter() - start, 1),
                         "psnr": result.summary["psnr"]["mean"], "ciede2000": result.summary["ciede2000"]["mean"]}
    if dry:
        return {"models": out, "compared": False, "why": "dry run: a toy study, not the committed one"}
    # the evaluation files only: data stages are not part of this check
    rows = [r for r in compare_runs(committed, reproduced, {}, {}).rows if r.path.startswith("reports/eval/")]
    comparison = Comparison(rows)
    return {"models": out, "compared": True, "passed": comparison.passed, "summary": comparison.summary(),
            "failures": comparison.reasons(), "changes": comparison.table()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--photos", default=str(FACES), help="a folder of photos for the throughput part")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--study-models", nargs="*", default=["A", "B", "C"])
    parser.add_argument("--dry", action="store_true", help="CPU, toy sizes: checks the script, measures nothing")
    args = parser.parse_args(argv)

    import colorstudy  # noqa: F401  (the torchvision shim, before anything imports it)
    from colorstudy.runtime import make_reproducible

    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: torch sees no GPU; run it on a CUDA machine, or pass --dry", file=sys.stderr)
        return 1
    device = torch.device("cpu" if args.dry else "cuda")
    make_reproducible(device, 2)
    size, width, batch, steps = (32, 4, 4, 3) if args.dry else (256, 64, args.batch, args.steps)
    started = time.perf_counter()
    report: dict = {"device": device_peak(device)[0], "torch": torch.__version__, "dry": args.dry,
                    "image_size": size, "width": width, "batch": batch, "dtype": "bf16 autocast" if not args.dry
                    else "fp32"}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        shards = make_shards(Path(args.photos), Path(tmp) / "photos", size, 64 if args.dry else None)
        for mode in ("resident", "streamed"):
            report[f"throughput_{mode}"] = throughput(shards, device, size, width, batch, steps, mode == "streamed")
            print(mode, report[f"throughput_{mode}"], flush=True)
        report["study"] = study(args.study_models[:1] if args.dry else args.study_models, device,
                                Path(tmp) / "study", args.dry)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["study"].get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
