"""The data every downstream stage keys on is byte-identical on every x86-64 machine.

DVC hashes ``data/shards``; if another machine writes other bytes, every train,
evaluate and report stage is out of date there after a `dvc pull`, and CI's comparison
with the committed run fails. Two checks make a difference between machines visible
on any one machine: the bytes of the default (`sample`) shards are pinned here, and the
same shards are rebuilt with numpy's and torch's SIMD dispatch turned down to the
x86-64 baseline, as on an older CPU (the float32 torch conversion this replaced gave
other bytes under exactly that setting).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from colorstudy.config import DataParams, load_params, section
from colorstudy.data.shards import preprocess
from colorstudy.data.sources import materialize

ROOT = Path(__file__).resolve().parents[1]

# sha256 of each file `preprocess` writes for the default params.yaml `data` section.
# A change here is a change of the study's data: re-run `dvc repro` and commit dvc.lock.
SAMPLE_SHARDS_SHA256 = {
    "manifest.parquet": "70f04da15515d2f56a7ef44d7f9598521308946e0465cd803f7efde8c77abb61",
    "rejects.csv": "6cf019e58456b99816f63004d668a440fea647527924bf8efc7e35efda05f9bd",
    "test-00000.arrow": "1136948ea92d20bc232077abfb3c85c03a28c11e347b8dd8c2ae85899c6314e7",
    "train-00000.arrow": "ddf9fe2ee261e7305b66db694283b2b0f8bc86cc7411f70e0788e7e116e7731a",
    "val-00000.arrow": "f875d6f2c65f0eb873cd1b281fbd5078596238706e63677c09995c9c3711d13d",
}

# numpy's dispatch down to its x86-64-v2 baseline, torch's kernels to their scalar default
BASELINE_SIMD_ENV = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR X86_V3", "ATEN_CPU_CAPABILITY": "default"}


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, DataParams]:
    params = section(load_params(ROOT / "params.yaml"), "data", DataParams)
    raw = tmp_path_factory.mktemp("sample") / "raw"
    materialize(raw, params)
    return raw, params


def test_sample_shards_have_the_pinned_bytes(sample, tmp_path):
    raw, params = sample
    preprocess(raw, tmp_path / "shards", params, progress=False)
    assert digests(tmp_path / "shards") == SAMPLE_SHARDS_SHA256


def test_shards_do_not_depend_on_the_cpus_simd_width(sample, tmp_path):
    raw, params = sample
    preprocess(raw, tmp_path / "here", params, workers=1, progress=False)
    script = (
        "import json, sys; from colorstudy.config import DataParams; from colorstudy.data.shards import preprocess; "
        "preprocess(sys.argv[1], sys.argv[2], DataParams(**json.loads(sys.argv[3])), workers=2, progress=False)"
    )
    subprocess.run([sys.executable, "-c", script, str(raw), str(tmp_path / "baseline"),
                    json.dumps(dataclasses.asdict(params))],
                   env={**os.environ, **BASELINE_SIMD_ENV}, check=True)
    assert digests(tmp_path / "baseline") == digests(tmp_path / "here")
