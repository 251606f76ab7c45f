"""Training throughput of every registered generator, in images per second.

One step = forward, MSE loss against random ab, backward, Adam step, at batch 16,
in train mode. Two settings: the pipeline's default (64x64, width 16) and the
published size (256x256, width 64; few steps, it is slow on a CPU). The unet gets
``depth = min(8, log2(size))`` as the training code passes it. On CUDA the same
runs again in bf16 autocast with channels_last tensors.

    python benchmarks/train_throughput.py [--steps 5] [--big-steps 2] [--threads 2] [--skip-full]
        [--peak-gflops-per-core X]

Each row also gives GFLOP/s (``torch.utils.flop_counter`` over one step: forward,
backward, no Adam) and that as a share of the CPU's fp32 FMA peak for the threads used:
cores x FMA pipes (2) x fp32 lanes (8 on AVX2 and on Zen 4's AVX-512, 16 on an Intel
AVX-512 core) x 2 x the clock /proc/cpuinfo reports; an estimate (turbo clocks differ),
``--peak-gflops-per-core`` overrides it. The last rows time the perceptual term's VGG16
(to relu3_3, on the predicted and the true image, backward through the predicted one).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from colorstudy.models import GENERATORS, build_generator

BATCH = 16
SETTINGS = ((64, 16), (256, 64))  # (image size, width): pipeline default, published size


def arch_kwargs(name: str, size: int, width: int) -> dict[str, int]:
    kwargs = {"width": width}
    if name == "unet":
        kwargs["depth"] = min(8, int(math.log2(size)))
    return kwargs


def cpu_peak_gflops_per_core() -> float | None:
    """fp32 FMA peak of one core from /proc/cpuinfo (see the module docstring); None if unknown."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz or " fma" not in info:
        return None
    lanes = 16 if (" avx512f" in info and "GenuineIntel" in info) else 8
    return 2 * lanes * 2 * max(mhz) / 1000


def step_flops(model: torch.nn.Module, L: torch.Tensor, ab: torch.Tensor) -> int:
    """FLOPs of one forward + backward (the optimizer's elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(L).float(), ab).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def vgg_term(size: int, steps: int) -> tuple[float, int]:
    """images/s and FLOPs a step of the perceptual term alone (random VGG16, batch 16)."""
    from colorstudy.losses import PerceptualLoss

    torch.manual_seed(0)
    loss_fn = PerceptualLoss(weights="random", layers=("relu1_2", "relu2_2", "relu3_3"))
    pred = torch.rand(BATCH, 2, size, size, requires_grad=True)
    L, ab = torch.rand(BATCH, 1, size, size) * 2 - 1, torch.rand(BATCH, 2, size, size) * 2 - 1

    def step() -> None:
        loss_fn(L, pred * 2 - 1, ab).backward()

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return BATCH / statistics.median(times), counter.get_total_flops()


def throughput(name: str, size: int, width: int, steps: int, device: torch.device, bf16: bool) -> tuple[float, int]:
    """images/s, and FLOPs of one forward + backward on the CPU (0 on a GPU)."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    model = build_generator(name, **arch_kwargs(name, size, width)).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    L = (torch.rand(BATCH, 1, size, size, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    ab = (torch.rand(BATCH, 2, size, size, device=device) * 2 - 1).contiguous(memory_format=memory_format)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(model(L).float(), ab)
        loss.backward()
        optimizer.step()

    flops = step_flops(model, L, ab) if device.type == "cpu" else 0
    step()  # warm-up: allocator, oneDNN/cuDNN algorithm choice, Adam state
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    # the median step: a shared CPU makes single steps spike, and the mean would follow them
    return BATCH / statistics.median(times), flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps at 64x64, width 16")
    parser.add_argument("--big-steps", type=int, default=2, help="timed steps at 256x256, width 64")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the pipeline uses 2)")
    parser.add_argument("--skip-full", action="store_true", help="only the 64x64 width-16 setting")
    parser.add_argument("--only", nargs="*", default=sorted(GENERATORS), help="generators to time")
    parser.add_argument("--peak-gflops-per-core", type=float, default=None, help="fp32 peak of one core")
    args = parser.parse_args()
    per_core = args.peak_gflops_per_core or cpu_peak_gflops_per_core()
    peak = per_core * args.threads if per_core else None
    if min(args.steps, args.big_steps, args.threads) < 1:
        parser.error("--steps, --big-steps and --threads must be at least 1")
    torch.set_num_threads(args.threads)

    runs = [(torch.device("cpu"), False)]
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        runs += [(torch.device("cuda"), False), (torch.device("cuda"), True)]
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {BATCH}, Adam + MSE; images/s, "
          f"GFLOP/s and share of the fp32 peak ({f'{peak:.0f} GFLOP/s' if peak else 'unknown'}) on the CPU")

    def row(label: str, size: int, width: int | str, name: str, rate: float, flops: int) -> None:
        gflops = flops * rate / BATCH / 1e9
        share = f"{gflops / peak:6.1%}" if peak and flops else "     -"
        print(f"{label:24s} {size:>3d}x{size:<3d} width {width!s:<2s} {name:12s} {rate:9.3g} "
              f"{gflops:8.1f} {share}", flush=True)

    for device, bf16 in runs:
        label = f"{device.type}{' bf16 channels_last' if bf16 else ' fp32'}"
        for size, width in SETTINGS[:1] if args.skip_full else SETTINGS:
            steps = args.steps if size == SETTINGS[0][0] else args.big_steps
            for name in args.only:
                row(label, size, width, name, *throughput(name, size, width, steps, device, bf16))
    for size, _ in SETTINGS[:1] if args.skip_full else SETTINGS:
        row("cpu fp32", size, "-", "vgg16 term", *vgg_term(size, args.steps if size == SETTINGS[0][0] else args.big_steps))


if __name__ == "__main__":
    main()
