"""The GPU check's CPU dry mode: every part of benchmarks/gpu_check.py runs and reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "datasets" / "faces"


@pytest.mark.slow
def test_gpu_check_dry_mode_runs_every_part(tmp_path):
    if not FACES.is_dir():
        pytest.skip(f"{FACES} is missing (the shared photo sets sit beside the repo)")
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--dry", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["device"] == "cpu"
    for mode in ("resident", "streamed"):
        part = report[f"throughput_{mode}"]
        assert part["split"] == mode and part["images_per_s"] > 0 and part["steps"] == 3
        assert part["warmup_steps"] == 1  # untimed, in the same pass of the loop as the timed ones
        assert 0 <= part["data_wait_share"] < 1 and part["mfu"] is None  # no known peak for a CPU
    assert set(report["study"]["models"]) == {"A"} and report["study"]["compared"] is False


def test_gpu_check_refuses_to_measure_a_gpu_it_does_not_have():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 1 and "torch sees no GPU" in done.stderr


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.5),  # SXM
    ("NVIDIA H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.5),
    ("NVIDIA H200 NVL", 835.5),
    ("NVIDIA GH200 480GB", 989.5),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA L40S", 362.05),
    ("NVIDIA A10G", 70.0),
    ("NVIDIA GeForce RTX 4090", None),  # unknown: no MFU rather than a wrong one
    ("Tesla T4", None),
])
def test_gpu_check_takes_the_peak_of_the_variant(name, peak):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.peak_tflops(name) == peak
