"""Device choice and reproducibility settings shared by training, evaluation and inference."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from pathlib import Path

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


def machine_kind(device: torch.device) -> str:
    """The hardware and kernels a float32 run's rounding depends on, as one line.

    Training is bitwise repeatable on one kind of machine only: another CPU model or
    SIMD width takes other rounding paths, and a small study amplifies them into other
    weights. Checkpoints carry this line so that a comparison of two runs knows whether
    their trained models can be expected to agree (see :mod:`colorstudy.compare`).
    """
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return (f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels, "
            f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")


def cpu_model() -> str:
    """``AMD EPYC (family 25, model 17)``: a hypervisor may hide the marketing name, so
    the family and model numbers are what tell one CPU generation from another."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if not line.strip():
                break  # the first processor describes them all
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


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
