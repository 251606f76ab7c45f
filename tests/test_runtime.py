"""Devices by name and index: validated when params are read, checked against the GPUs torch sees."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from colorstudy.config import EvaluateParams, ParamsError, TrainParams, parse
from colorstudy.runtime import machine_kind, make_reproducible, resolve_device

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:7"])
def test_device_names_params_accept(name):
    assert parse(TrainParams, {"device": name}, "train").device == name
    assert parse(EvaluateParams, {"device": name}, "evaluate").device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda0", "mps"])
def test_other_device_names_fail_naming_the_choices(name):
    with pytest.raises(ParamsError, match=r"train.device: .* is not a device; use auto \| cpu \| cuda \| cuda:N"):
        parse(TrainParams, {"device": name}, "train")


def test_one_gpu_index_cannot_serve_several_processes():
    with pytest.raises(ParamsError, match=r"cuda:1 names one GPU but train.nproc=2"):
        parse(TrainParams, {"device": "cuda:1", "nproc": 2}, "train")
    with pytest.raises(ParamsError, match=r"does not split over train.nproc=3"):
        parse(TrainParams, {"batch_size": 16, "nproc": 3}, "train")


def test_a_gpu_index_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"torch sees 2 GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_no_gpu_is_an_error_not_a_quiet_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(RuntimeError, match=rf"device `{name}` was asked for but torch sees no GPU"):
            resolve_device(name)


def test_the_machine_kind_names_what_a_float32_run_rounds_with():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kind = machine_kind(torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert f"{torch.backends.cpu.get_cpu_capability()} kernels" in kind
    assert kind.endswith(f"1 thread(s), torch {torch.__version__}")
    assert not kind.startswith(",")  # some CPU name, whatever the machine


@pytest.fixture
def process_flags(monkeypatch):
    """make_reproducible sets process-wide flags: each test gets them back as they were."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32, deterministic, warn_only, fill) = saved
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def test_evaluation_on_cuda_is_deterministic_and_without_tf32(process_flags):
    cuda = torch.device("cuda")  # the flags are plain process settings: no GPU needed to set them
    make_reproducible(cuda, 1, purpose="train")
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32 and not torch.are_deterministic_algorithms_enabled()
    make_reproducible(cuda, 1, purpose="evaluate")  # in the same process, after training
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # cuBLAS's condition for determinism
    make_reproducible(cuda, 1, purpose="train")  # and training after it gets its speed back
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


def test_the_evaluate_stage_asks_for_the_evaluation_settings(monkeypatch):
    spec = importlib.util.spec_from_file_location("evaluate_stage", ROOT / "stages" / "evaluate.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    calls = []

    def record(device, num_threads, purpose="train"):
        calls.append(purpose)
        raise ValueError("recorded")  # stops the stage before it reads any data

    monkeypatch.setattr(stage, "make_reproducible", record)
    monkeypatch.chdir(ROOT)
    assert stage.main(["baseline", "shards", "report", "pred.npz"]) == 1
    assert calls == ["evaluate"]
