"""Every stage script has one shape: an argument check, a usage line, a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.name for p in (ROOT / "stages").glob("*.py"))


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("script", STAGES)
def test_wrong_arguments_print_the_usage_line(script):
    done = _run(str(ROOT / "stages" / script))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith(f"Usage: python stages/{script} "), done.stderr


def test_a_bad_run_spec_is_one_line_naming_the_key(tmp_path):
    spec = json.loads(_run("-c", "import json; from colorstudy.config import load_params; "
                                 "from colorstudy.study import resolve_model; "
                                 "print(resolve_model(load_params(), 'A').to_json())").stdout)
    spec["train"]["device"] = "gpu"
    (tmp_path / "A.json").write_text(json.dumps(spec))
    done = _run(str(ROOT / "stages/train.py"), str(tmp_path / "A.json"), str(tmp_path / "shards"),
                str(tmp_path / "m"), str(tmp_path / "l"), str(tmp_path / "r"))
    assert done.returncode == 1
    assert done.stderr.strip() == ("train: train.device: 'gpu' is not a device; use auto | cpu | cuda | "
                                   "cuda:N (N: a GPU index, 0 first)")


def test_an_unknown_model_id_is_one_line_listing_the_ids(tmp_path):
    done = _run(str(ROOT / "stages/resolve.py"), str(tmp_path / "study"), "A", "Z")
    assert done.returncode == 1 and done.stderr.startswith("resolve: models: no study id 'Z'; ids: [")
    assert not (tmp_path / "study").exists()  # a bad id writes nothing, not even the good one


def _imported(done: subprocess.CompletedProcess) -> set[str]:
    """Top-level packages a ``python -X importtime`` run imported."""
    return {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize(("model_id", "needs_torchvision"), [("A", False), ("E", True)])
def test_training_imports_torchvision_only_for_a_backbone(faces_shards, study_params, tmp_path, model_id,
                                                          needs_torchvision):
    """torchvision takes seconds to import: an L1-only model's train stage never pays it;
    the perceptual term's VGG16 does (the control that the check sees imports at all)."""
    from colorstudy.study import resolve_model

    study_params["train"].update(epochs=1, decay_epochs=0)
    resolve_model(study_params, model_id).write(tmp_path / "spec.json")
    done = _run("-X", "importtime", str(ROOT / "stages/train.py"), str(tmp_path / "spec.json"), str(faces_shards),
                str(tmp_path / "models"), str(tmp_path / "logs"), str(tmp_path / "resume"))
    assert done.returncode == 0, done.stderr[-2000:]
    imported = _imported(done)
    assert "torch" in imported and "dvclive" in imported
    assert ("torchvision" in imported) == needs_torchvision
    assert not imported & {"lpips", "pytorch_fid", "matplotlib"}
