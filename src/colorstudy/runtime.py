"""Device choice and reproducibility settings shared by training, evaluation and inference."""

from __future__ import annotations

import contextlib
import contextvars
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CudaSettings:
    """The process-wide CUDA flags a purpose runs under."""

    benchmark: bool  # cuDNN autotuning: may pick another algorithm (other rounding) per run
    deterministic: bool  # cuDNN and torch kernels with a fixed reduction order
    tf32: bool  # float32 matmuls and convolutions on TF32 tensor cores (10 mantissa bits)


# Training on a GPU is repeatable only up to float noise anyway (bf16 autocast), so speed wins.
# Evaluation promises the same bytes for the same inputs on the same device: no autotuning
# (its choice differs between runs), deterministic kernels, and full float32 for the metric
# networks and filters (TF32 moved a gray image's colorfulness 0.0025 -> 0.059).
CUDA_SETTINGS: dict[str, CudaSettings] = {
    "train": CudaSettings(benchmark=True, deterministic=False, tf32=True),
    "evaluate": CudaSettings(benchmark=False, deterministic=True, tf32=False),
}


def make_reproducible(device: torch.device, num_threads: int, purpose: str = "train") -> None:
    """Bitwise-repeatable CPU runs: a fixed thread count (reductions split by thread
    count change float sums) and deterministic kernels. On CUDA the ``purpose``'s
    :data:`CUDA_SETTINGS`; every flag is set, so a process that trains after it evaluated
    (or the reverse) runs each under its own."""
    if device.type == "cpu":
        torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(True)
    else:
        apply_cuda_settings(CUDA_SETTINGS[purpose])
    # Filling every new tensor with NaN is a debugging aid of deterministic mode,
    # not part of determinism, and costs ~15% of a small model's step.
    torch.utils.deterministic.fill_uninitialized_memory = False


def apply_cuda_settings(settings: CudaSettings) -> None:
    """Set the CUDA flags of ``settings`` (plain process flags: settable without a GPU)."""
    if settings.deterministic:
        # cuBLAS is deterministic only with a fixed workspace; read when its first handle is made
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic CUDA kernel is named in a warning instead of
    # failing an evaluation that has never met it on a GPU
    torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = settings.benchmark
    torch.backends.cudnn.deterministic = settings.deterministic
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32


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


# The CUDA path's autocast dtype; bf16 keeps float32's exponent range, so no loss scaling.
AUTOCAST_DTYPE = torch.bfloat16
_CPU_STANDS_IN = contextvars.ContextVar("cpu_stands_in_for_cuda", default=False)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on GPU; a no-op on CPU, where bf16 is slower and less exact
    (except under :func:`cpu_autocast_as_on_cuda`)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=AUTOCAST_DTYPE)
    if device.type == "cpu" and _CPU_STANDS_IN.get():
        return torch.autocast("cpu", dtype=AUTOCAST_DTYPE)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cpu_autocast_as_on_cuda() -> Iterator[None]:
    """Within it, :func:`autocast` on the CPU is the CUDA path's bf16 autocast: what lets
    the tests check the GPU path's dtypes and conversions on a machine without a GPU."""
    token = _CPU_STANDS_IN.set(True)
    try:
        yield
    finally:
        _CPU_STANDS_IN.reset(token)


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
