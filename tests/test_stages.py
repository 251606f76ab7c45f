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
    done = _run(str(ROOT / "stages/resolve.py"), "Z", str(tmp_path / "Z.json"))
    assert done.returncode == 1 and done.stderr.startswith("resolve: models: no study id 'Z'; ids: [")
