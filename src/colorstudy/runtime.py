"""Device choice and reproducibility settings shared by training, evaluation and inference."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from colorstudy.config import check_device_name


class DeviceError(RuntimeError):
    """The device or process layout asked for is not what this machine has; the message says what is."""


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; ``cuda:N`` must name a GPU torch sees.

    Asking for a GPU that is not there is an error, never a quiet fall-back to the CPU.
    """
    problem = check_device_name(choice)
    if problem:
        raise ValueError(problem)
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device `{choice}` was asked for but torch sees no GPU; use `auto` or `cpu`")
    device = torch.device(choice)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device `{choice}`: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1} "
                           f"(CUDA_VISIBLE_DEVICES renumbers them from 0)")
    return device


def make_reproducible(device: torch.device, num_threads: int) -> None:
    """Bitwise-repeatable CPU runs: a fixed thread count (reductions split by thread
    count change float sums) and deterministic kernels. On CUDA, speed wins: cuDNN
    autotuning stays on and results are repeatable only up to float noise."""
    if device.type == "cpu":
        torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(True)
        # Filling every new tensor with NaN is a debugging aid of deterministic mode,
        # not part of determinism, and costs ~15% of a small model's step.
        torch.utils.deterministic.fill_uninitialized_memory = False
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on GPU; a no-op on CPU, where bf16 is slower and less exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode without gradients; restores the model's previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
