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

import numpy as np
import pytest

from colorstudy.config import DataParams, load_params, section
from colorstudy.data.preprocess import preprocess
from colorstudy.data.sources import materialize

ROOT = Path(__file__).resolve().parents[1]

# sha256 of each file `preprocess` writes for the default params.yaml `data` section.
# A change here is a change of the study's data: re-run `dvc repro` and commit dvc.lock.
SAMPLE_SHARDS_SHA256 = {
    "manifest.parquet": "1b30ac21622ef39745429da6d83f455a5d68c730bf112a96605110fd7c9970f1",
    "rejects.csv": "055f451f971f216c670504b35f2fb7ae35a0104b0ebb9e8fcadf09acbcfded76",
    "test-00000.arrow": "1136948ea92d20bc232077abfb3c85c03a28c11e347b8dd8c2ae85899c6314e7",
    "train-00000.arrow": "84201ce2fbbda5f7d59b6c3a5b86b5d4e6c9a6640e4e259cb9143617786f076b",
    "val-00000.arrow": "62e185a4539571d69581e373537738d545c5cbbeff659c5db97140c47ed89765",
}

# Other CPUs, simulated by turning dispatch down: an AVX2-only machine (torch's AVX2
# kernels, numpy without AVX-512) and a bare x86-64-v2 one (torch's scalar kernels);
# libjpeg-turbo down to SSE2 in both (the sample set has a JPEG).
OTHER_CPUS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
             "JSIMD_FORCESSE2": "1"},
    "x86-64-v2": {"ATEN_CPU_CAPABILITY": "default", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR X86_V3",
                  "JSIMD_FORCESSE2": "1"},
}


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


@pytest.mark.parametrize("cpu", sorted(OTHER_CPUS))
def test_shards_do_not_depend_on_the_cpus_simd_width(sample, tmp_path, cpu):
    raw, params = sample
    preprocess(raw, tmp_path / "here", params, workers=1, progress=False)
    script = (
        "import json, sys; from colorstudy.config import DataParams; from colorstudy.data.preprocess import preprocess; "
        "preprocess(sys.argv[1], sys.argv[2], DataParams(**json.loads(sys.argv[3])), workers=2, progress=False)"
    )
    subprocess.run([sys.executable, "-c", script, str(raw), str(tmp_path / "baseline"),
                    json.dumps(dataclasses.asdict(params))],
                   env={**os.environ, **OTHER_CPUS[cpu]}, check=True)
    assert digests(tmp_path / "baseline") == digests(tmp_path / "here")


def test_portable_lab_agrees_with_skimage(sample):
    """The exact-arithmetic conversion is still the CIE Lab of skimage, to float32 precision."""
    from PIL import Image
    from skimage.color import rgb2lab

    from colorstudy.lab import rgb_to_lab_np

    raw, _ = sample
    photo = np.asarray(Image.open(next(p for p in sorted(raw.rglob("*.png")))).convert("RGB"))
    ours = rgb_to_lab_np(photo)
    assert ours.dtype == np.float32
    assert np.abs(ours - rgb2lab(photo)).max() < 2e-4
    every_byte = np.stack(np.meshgrid(*[np.arange(0, 256, 5, dtype=np.uint8)] * 3), axis=-1)  # 52^3 colors
    assert np.abs(rgb_to_lab_np(every_byte) - rgb2lab(every_byte)).max() < 2e-4
