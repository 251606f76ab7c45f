"""Training throughput of every registered generator, in images per second.

One step = forward, MSE loss against random ab, backward, Adam step, at batch 16,
in train mode. Two settings: the pipeline's default (64x64, width 16) and the
published size (256x256, width 64; few steps, it is slow on a CPU). The unet gets
``depth = min(8, log2(size))`` as the training code passes it. On CUDA the same
runs again in bf16 autocast with channels_last tensors.

    python benchmarks/train_throughput.py [--steps 5] [--big-steps 2] [--threads 2] [--skip-full]
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


def throughput(name: str, size: int, width: int, steps: int, device: torch.device, bf16: bool) -> float:
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
    return BATCH / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps at 64x64, width 16")
    parser.add_argument("--big-steps", type=int, default=2, help="timed steps at 256x256, width 64")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the pipeline uses 2)")
    parser.add_argument("--skip-full", action="store_true", help="only the 64x64 width-16 setting")
    parser.add_argument("--only", nargs="*", default=sorted(GENERATORS), help="generators to time")
    args = parser.parse_args()
    if min(args.steps, args.big_steps, args.threads) < 1:
        parser.error("--steps, --big-steps and --threads must be at least 1")
    torch.set_num_threads(args.threads)

    runs = [(torch.device("cpu"), False)]
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        runs += [(torch.device("cuda"), False), (torch.device("cuda"), True)]
    print(f"torch {torch.__version__}, {args.threads} CPU threads, batch {BATCH}, Adam + MSE; images/s")
    for device, bf16 in runs:
        label = f"{device.type}{' bf16 channels_last' if bf16 else ' fp32'}"
        for size, width in SETTINGS[:1] if args.skip_full else SETTINGS:
            steps = args.steps if size == SETTINGS[0][0] else args.big_steps
            for name in args.only:
                rate = throughput(name, size, width, steps, device, bf16)
                print(f"{label:24s} {size:>3d}x{size:<3d} width {width:<2d} {name:12s} {rate:9.3g}", flush=True)


if __name__ == "__main__":
    main()
