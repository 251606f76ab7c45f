"""One GPU check: training throughput and MFU of the full-size U-Net, then a small study
on the GPU set beside the committed CPU study.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--steps 30] [--warmup 10] [--batch 32]
                                   [--study-models A B C] [--dry]

1. **Throughput**: the study's own training loop (``train.train_epoch``: augmentation,
   learning-rate schedule, finite check, Adam) on the full-size U-Net (width 64, depth 8,
   54 M parameters) at 256x256 in bf16 autocast with channels_last, model A's L1
   objective, on real photos (``--photos``, the shared faces, upscaled to 256 px) read by
   the training data path, both resident on the GPU and streamed from the shards. It
   writes images/s, achieved TFLOP/s (forward + backward FLOPs counted by
   ``torch.utils.flop_counter`` on one step), MFU (that over the device's dense bf16
   peak, when the device is one this file knows: ``peak_tflops``), the share of step time
   spent waiting for data, and peak memory. ``--steps`` steps are timed, cycling the split
   as often as it takes, after ``--warmup`` untimed ones in the same pass of the loop (the
   prefetch thread of a streamed split runs on into the timed window).
2. **Study**: ``--study-models`` of the default ``params.yaml`` trained and evaluated on
   the GPU from the sample dataset, every seed of ``train.seeds``, each
   ``reports/eval/<id>/seed<S>/metrics.json`` compared with the committed CPU ones by the
   rules CI uses (``colorstudy.compare``: a GPU is another machine kind, so the seed-means
   are judged against the committed seeds, ``colorstudy.seed_rule``).

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
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s, by the
# words of the name torch reports. One chip name covers variants of other clocks and SM
# counts (H100 SXM 989.5, PCIe 756.5, NVL 835.5), so the most specific key matches first.
BF16_PEAK_TFLOPS = {
    "H200 NVL": 835.5, "H200": 989.5, "GH200": 989.5,
    "H100 NVL": 835.5, "H100 PCIe": 756.5, "H100": 989.5,
    "A100": 312.0, "L40S": 362.05, "A10G": 70.0,
}
WARMUP_STEPS = 10  # untimed: allocator, cuDNN algorithm search, Adam state, the prefetch queue


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the device called ``name`` (``torch.cuda.get_device_name``),
    None for one this file does not know. A key matches when all its words are words of the
    name (``A100-SXM4-80GB`` splits at the dashes; ``GH200`` is not ``H200``); of several,
    the one with the most words wins."""
    words = set(name.replace("-", " ").lower().split())
    keys = [key for key in BF16_PEAK_TFLOPS if set(key.lower().split()) <= words]
    return BF16_PEAK_TFLOPS[max(keys, key=lambda key: len(key.split()))] if keys else None


def device_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, peak_tflops(name)


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


class TimedWindow:
    """``batches`` with a stopwatch: it starts, after the device finished the work queued so
    far, when batch ``untimed`` is asked for. One iterator for warm-up and timed steps, so a
    streamed split's prefetch thread runs on across the start of the window."""

    def __init__(self, batches, untimed: int, device: torch.device) -> None:
        self.batches, self.untimed, self.device = batches, untimed, device
        self.started, self.wait_before = 0.0, 0.0

    @property
    def steps(self) -> int:
        return self.batches.steps

    @property
    def wait_seconds(self) -> float:
        return self.batches.wait_seconds - self.wait_before

    def __iter__(self):
        inner = iter(self.batches)
        try:
            for i in range(self.batches.steps):
                if i == self.untimed:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                        torch.cuda.reset_peak_memory_stats(self.device)
                    self.started, self.wait_before = time.perf_counter(), self.batches.wait_seconds
                yield next(inner)
        finally:
            inner.close()


def cycled_order(n: int, length: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``length`` indices of a split of ``n`` images: fresh permutations end to end, as epochs draw them."""
    parts = [torch.randperm(n, generator=gen, device=device) for _ in range(-(-length // n))]
    return torch.cat(parts)[:length]


def throughput(shards_dir: Path, device: torch.device, size: int, width: int, batch: int, steps: int,
               streamed: bool, warmup: int = WARMUP_STEPS) -> dict:
    """``steps`` timed steps of the real training loop, cycling the split, after ``warmup``
    untimed ones in the same loop (one epoch of ``warmup + steps`` steps, prefetch alive throughout)."""
    from colorstudy.config import RunTrainParams
    from colorstudy.data.loader import EpochBatches, load_split
    from colorstudy.data.shards import LabShards
    from colorstudy.distributed import SINGLE
    from colorstudy.objective import build_objective
    from colorstudy.study import RunSpec
    from colorstudy.train import train_epoch

    cfg = RunTrainParams(epochs=1, decay_epochs=0, batch_size=batch, width=width, device=str(device), seed=0)
    run = RunSpec(model_id="gpu_check", generator="unet",
                  arch_kwargs={"width": width, "depth": min(8, size.bit_length() - 1)},
                  terms={"l1": 100.0}, image_size=size, train=cfg)
    data = load_split(LabShards(shards_dir), "train", device, budget_bytes=0 if streamed else None)
    if len(data) < batch:
        raise SystemExit(f"{shards_dir}: {len(data)} training images make no batch of {batch}")
    objective = build_objective(run, device)
    gen = torch.Generator(device=device).manual_seed(0)
    order = cycled_order(len(data), (warmup + steps) * batch, gen, device)
    L, ab = data.fetch(order[:batch])
    L, ab = (x.contiguous(memory_format=torch.channels_last) for x in (L, ab)) if device.type == "cuda" else (L, ab)
    flops = flops_per_step(objective, L, ab, device)
    batches = TimedWindow(EpochBatches(data, order, batch, warmup + steps), warmup, device)
    train_epoch(objective, cfg, batches, gen, 0, "gpu_check", device, SINGLE)  # syncs at its end
    seconds = time.perf_counter() - batches.started
    results = {"steps": steps, "warmup_steps": warmup, "seconds": round(seconds, 3),
               "images_per_s": round(steps * batch / seconds, 1),
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
    from colorstudy.runtime import make_reproducible
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
    # every seed of train.seeds (one in a dry run): CI's cross-machine rule compares seed-means
    seeds = params["train"]["seeds"][:1] if dry else params["train"]["seeds"]
    for model_id in models:
        start = time.perf_counter()
        for seed in seeds:
            run_dir = work / model_id / f"seed{seed}"
            train_model(resolve_model(params, model_id, seed), work / "shards", run_dir, work / f"{model_id}-{seed}-logs")
            evaluation = section(params, "evaluate", EvaluateParams)
            make_reproducible(device, 2, purpose="evaluate")  # as stages/evaluate.py runs; train_model resets
            result = evaluate(run_dir / "selected.pt", work / "shards", evaluation)
            path = f"reports/eval/{model_id}/seed{seed}/metrics.json"
            reproduced[path] = flatten_metrics(json.loads(json.dumps(result.summary)))
            if (ROOT / path).is_file():
                committed.update(load_metrics({path: (ROOT / path).read_text()}))
        out[model_id] = {"seconds": round(time.perf_counter() - start, 1), "seeds": len(seeds),
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
    parser.add_argument("--steps", type=int, default=30, help="timed steps, cycling the training split")
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="untimed steps before them")
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
    size, width, batch, steps, warmup = (32, 4, 4, 3, 1) if args.dry else (256, 64, args.batch, args.steps,
                                                                            args.warmup)
    started = time.perf_counter()
    report: dict = {"device": device_peak(device)[0], "torch": torch.__version__, "dry": args.dry,
                    "image_size": size, "width": width, "batch": batch, "dtype": "bf16 autocast" if not args.dry
                    else "fp32"}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        shards = make_shards(Path(args.photos), Path(tmp) / "photos", size, 64 if args.dry else None)
        for mode in ("resident", "streamed"):
            report[f"throughput_{mode}"] = throughput(shards, device, size, width, batch, steps, mode == "streamed",
                                                      warmup)
            print(mode, report[f"throughput_{mode}"], flush=True)
        report["study"] = study(args.study_models[:1] if args.dry else args.study_models, device,
                                Path(tmp) / "study", args.dry)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["study"].get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
