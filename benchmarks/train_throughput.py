"""Training throughput of every registered generator, in images per second.

One step = forward, MSE loss against random ab, backward, Adam step, at batch 16,
in train mode. Two settings: the pipeline's default (64x64, width 16) and the
published size (256x256, width 64; few steps, it is slow on a CPU). The unet gets
``depth = min(8, log2(size))`` as the training code passes it. On CUDA the same
runs again in bf16 autocast with channels_last tensors.

    python benchmarks/train_throughput.py [--steps 5] [--big-steps 2] [--threads 2] [--skip-full]
        [--peak-gflops-per-core X]
    python benchmarks/train_throughput.py --adam --threads 1   # Adam for-loop vs foreach, channels_last

Each row also gives GFLOP/s (``torch.utils.flop_counter`` over one step: forward,
backward, no Adam) and that as a share of the peak for the threads used, which is the
faster of a 2048x2048 fp32 matmul and a 3x3 256-channel convolution measured here (the
practical peak: the nominal one needs the turbo clock, which /proc/cpuinfo does not
report; the header also prints the nominal estimate at the reported clock: FMA pipes (2) x fp32 lanes (8 on AVX2 and on Zen 4's
AVX-512, 16 on an Intel AVX-512 core) x 2 x clock). ``--peak-gflops-per-core`` overrides
the measured peak. The last rows time the perceptual term's VGG16
(to relu3_3, on the predicted and the true image, backward through the predicted one).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

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


def measured_peak_gflops(repeats: int = 5) -> float:
    """The practical fp32 peak on the threads set: the faster of a 2048x2048 matmul and a
    3x3, 256-channel convolution (oneDNN's convolutions outrun the matmul library here),
    each the best of ``repeats``."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    x, w = torch.rand(16, 256, 32, 32), torch.rand(256, 256, 3, 3)
    work = ((lambda: a @ b, 2 * 2048**3), (lambda: F.conv2d(x, w, padding=1), 2 * 16 * 256 * 256 * 9 * 32 * 32))
    best = 0.0
    for fn, flops in work:
        fn()  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def cpu_peak_gflops_per_core() -> float | None:
    """Nominal fp32 FMA peak of one core at the clock /proc/cpuinfo reports; None if unknown."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz or " fma" not in info:
        return None
    lanes = 16 if (" avx512f" in info and "GenuineIntel" in info) else 8
    return 2 * lanes * 2 * max(mhz) / 1000


def counted_flops(fn: Callable[[], None]) -> int:
    """FLOPs ``fn`` runs (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def images_per_second(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """After one warm-up step (allocator, oneDNN/cuDNN algorithm choice, Adam state), the
    median of ``steps`` timed steps: a shared CPU makes single steps spike, and the mean
    would follow them."""
    step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return BATCH / statistics.median(times)


def vgg_term(size: int, steps: int) -> tuple[float, int]:
    """images/s and FLOPs a step of the perceptual term alone (random VGG16, batch 16)."""
    from colorstudy.losses import PerceptualLoss

    torch.manual_seed(0)
    loss_fn = PerceptualLoss(weights="random", layers=("relu1_2", "relu2_2", "relu3_3"))
    pred = torch.rand(BATCH, 2, size, size, requires_grad=True)
    L, ab = torch.rand(BATCH, 1, size, size) * 2 - 1, torch.rand(BATCH, 2, size, size) * 2 - 1

    def step() -> None:
        loss_fn(L, pred * 2 - 1, ab).backward()

    flops = counted_flops(step)
    return images_per_second(step, steps, torch.device("cpu")), flops


def throughput(name: str, size: int, width: int, steps: int, device: torch.device, bf16: bool,
               foreach: bool | None = True, channels_last: bool | None = None) -> tuple[float, int]:
    """images/s, and FLOPs of one forward + backward on the CPU (0 on a GPU). Adam as training
    builds it (foreach) unless ``foreach`` says otherwise; channels_last with bf16 unless told."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if (bf16 if channels_last is None else channels_last) else torch.contiguous_format
    model = build_generator(name, **arch_kwargs(name, size, width)).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=foreach)
    L = (torch.rand(BATCH, 1, size, size, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    ab = (torch.rand(BATCH, 2, size, size, device=device) * 2 - 1).contiguous(memory_format=memory_format)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(model(L).float(), ab)
        loss.backward()
        optimizer.step()

    def forward_backward() -> None:  # the counted work: Adam's elementwise updates are not
        F.mse_loss(model(L).float(), ab).backward()
        model.zero_grad(set_to_none=True)

    flops = counted_flops(forward_backward) if device.type == "cpu" else 0
    return images_per_second(step, steps, device), flops


def adam_and_layout(steps: int, repeats: int = 3) -> None:
    """The default U-Net (64x64, width 16) with Adam's for-loop or foreach update, contiguous or
    channels_last tensors, interleaved ``repeats`` times (best kept: the machine may be shared)."""
    variants = {"Adam for-loop": (False, False), "Adam foreach": (True, False),
                "foreach + channels_last": (True, True)}
    best = dict.fromkeys(variants, 0.0)
    for _ in range(repeats):
        for label, (foreach, channels_last) in variants.items():
            rate, _ = throughput("unet", 64, 16, steps, torch.device("cpu"), False, foreach, channels_last)
            best[label] = max(best[label], rate)
    for label, rate in best.items():
        print(f"unet 64x64 width 16, {label:24s} {rate:7.1f} images/s  {rate / best['Adam for-loop']:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps at 64x64, width 16")
    parser.add_argument("--big-steps", type=int, default=2, help="timed steps at 256x256, width 64")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the pipeline uses 2)")
    parser.add_argument("--skip-full", action="store_true", help="only the 64x64 width-16 setting")
    parser.add_argument("--only", nargs="*", default=sorted(GENERATORS), help="generators to time")
    parser.add_argument("--peak-gflops-per-core", type=float, default=None, help="fp32 peak of one core")
    parser.add_argument("--adam", action="store_true",
                        help="only the default U-Net with Adam's for-loop vs foreach update, and channels_last")
    args = parser.parse_args()
    nominal = cpu_peak_gflops_per_core()
    if min(args.steps, args.big_steps, args.threads) < 1:
        parser.error("--steps, --big-steps and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    if args.adam:
        adam_and_layout(max(args.steps, 10))
        return

    runs = [(torch.device("cpu"), False)]
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        runs += [(torch.device("cuda"), False), (torch.device("cuda"), True)]
    peak = args.peak_gflops_per_core * args.threads if args.peak_gflops_per_core else measured_peak_gflops()
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {BATCH}, Adam + MSE; images/s, "
          f"GFLOP/s and share of the peak: {peak:.0f} GFLOP/s (measured here: the faster of a matmul and a convolution; nominal at the "
          f"reported clock: {f'{nominal * args.threads:.0f}' if nominal else 'unknown'}) on the CPU")

    def row(label: str, size: int, width: int | str, name: str, rate: float, flops: int) -> None:
        gflops = flops * rate / BATCH / 1e9
        share = f"{gflops / peak:6.1%}" if flops else "     -"
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
