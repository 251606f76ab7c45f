"""The evaluate stage: metrics with CIs, the grayscale baseline, determinism, outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from colorstudy import lab
from colorstudy.checkpoint import Checkpoint
from colorstudy.config import FID_NOT_COMPUTED, DataParams, EvaluateParams
from colorstudy.data.preprocess import preprocess
from colorstudy.data.shards import LabShards
from colorstudy.data.sources import Source, write_sources
from colorstudy.evaluate import BASELINE, IMAGE_METRICS, evaluate, load_predictions, save_predictions, write_outputs
from colorstudy.models import build_generator
from colorstudy.weights import RANDOM_NOTE
from conftest import run_spec

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "datasets" / "faces"
pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason="shared face photos not present")

SIZE = 32
SPLITS = ["train", "val", "test", "test"]  # face i gets SPLITS[i % 4]: 4 test faces of 10
N_FACES = 10
N_TEST = 4
# batches of 3 and 1; FID on (the default is none), so its code path stays tested
PARAMS = EvaluateParams(batch_size=3, bootstrap=200, seed=7, device="cpu", fid_weights="random")
NO_FID = dataclasses.replace(PARAMS, fid_weights="none")



def make_shards(root: Path) -> Path:
    """A tiny preprocess output: 10 faces at 32x32, 4 of them in the test split."""
    raw = root / "raw"
    raw.mkdir(parents=True)
    rows = []
    for i, path in enumerate(sorted(FACES.glob("*.jpg"))[:N_FACES]):
        (raw / path.name).symlink_to(path)
        rows.append(Source(path.name, path.stem, SPLITS[i % len(SPLITS)]))
    write_sources(raw, rows)
    out = root / "shards"
    metrics = preprocess(raw, out, DataParams(dataset="sample", image_size=SIZE, min_side=16), workers=0,
                         progress=False)
    (root / "preprocess.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def make_checkpoint(path: Path, model_id: str, seed: int, perceptual: bool = False) -> Path:
    """A tiny trained-looking checkpoint: a registered unet with seeded random weights."""
    torch.manual_seed(seed)
    arch_kwargs = {"width": 4, "depth": 5}
    model = build_generator("unet", **arch_kwargs)
    history = [{"train/l1": 1.0 / (e + 1), "val/ab_l1": 0.2 - 0.01 * e, "val/ab_error": 20.0 - e} for e in range(3)]
    provenance = {"generator": {}}
    if perceptual:
        provenance["perceptual"] = {"backbone": "vgg16", "weights": "random", "note": RANDOM_NOTE}
    Checkpoint(model_id=model_id, architecture="unet", arch_kwargs=arch_kwargs,
               run=run_spec(model_id, arch_kwargs=arch_kwargs), epoch=3,
               selected={"epoch": 2, "criterion": "last", "ab_l1": 0.19, "ab_error": 19.0}, history=history,
               provenance=provenance, generator=model.state_dict()).save(path)
    return path


_CACHE: dict = {}  # shared with test_report.py: each tiny study is built and scored once per session


def study_files(tmp_path_factory) -> dict[str, Path]:
    """Shards of 10 faces and checkpoints of models A (L1-like) and C (perceptual, random VGG)."""
    if "study" not in _CACHE:
        root = tmp_path_factory.mktemp("study")
        _CACHE["study"] = {"root": root, "shards": make_shards(root),
                           "A": make_checkpoint(root / "models/A/selected.pt", "A", 1),
                           "C": make_checkpoint(root / "models/C/selected.pt", "C", 2, perceptual=True)}
    return _CACHE["study"]


def evaluated(tmp_path_factory, model_id: str, params: EvaluateParams = PARAMS, seed: int = 0):
    """The Evaluation of ``model_id`` (A, C or baseline) with ``params`` (PARAMS or NO_FID), computed
    once; ``seed`` > 0: another training seed's checkpoint of that model (other random weights)."""
    key = (model_id, params, seed)
    if key not in _CACHE:
        files = study_files(tmp_path_factory)
        model = files.get(model_id, BASELINE)
        if seed and model_id != BASELINE:
            model = make_checkpoint(files["root"] / f"models/{model_id}/seed{seed}/selected.pt", model_id,
                                    100 * seed + {"A": 1, "C": 2}[model_id], perceptual=model_id == "C")
        _CACHE[key] = evaluate(model, files["shards"], params)
    return _CACHE[key]


@pytest.fixture
def study(tmp_path_factory) -> dict[str, Path]:
    return study_files(tmp_path_factory)


@pytest.fixture
def baseline_result(tmp_path_factory):
    return evaluated(tmp_path_factory, BASELINE)


@pytest.fixture
def model_result(tmp_path_factory):
    return evaluated(tmp_path_factory, "A")


def test_every_metric_has_a_mean_inside_its_ci(model_result):
    s = model_result.summary
    assert s["model"] == "A" and s["n_images"] == N_TEST
    for name in IMAGE_METRICS:
        m = s[name]
        assert set(m) == {"mean", "ci95_low", "ci95_high"}, name
        assert m["ci95_low"] <= m["mean"] <= m["ci95_high"], (name, m)
        assert math.isfinite(m["mean"]), name
    assert math.isfinite(s["fid"]) and s["fid"] >= 0
    assert 0 < s["ssim"]["mean"] <= 1 and 0 < s["ciede2000"]["mean"] < 100
    # the mean is the mean of the per-image values, never a sum
    assert s["psnr"]["mean"] == pytest.approx(model_result.per_image["psnr"].mean(), rel=1e-5)


def test_provenance_labels_random_backbones(model_result, tmp_path_factory):
    prov = model_result.summary["provenance"]
    assert RANDOM_NOTE in prov["lpips"] and RANDOM_NOTE in prov["fid"]
    assert prov["perceptual_loss"] == "not used"
    c = evaluated(tmp_path_factory, "C").summary["provenance"]
    assert c["perceptual_loss"].startswith("vgg16") and RANDOM_NOTE in c["perceptual_loss"]


def test_baseline_predicts_no_color(baseline_result, study):
    shards = LabShards(study["shards"])
    L, ab = shards.split("test")
    s = baseline_result.summary
    assert s["model"] == BASELINE
    # ab = 0: MSE on normalized ab is the mean square of the truth's ab
    per_image_ab2 = ab.double().square().mean(dim=(1, 2, 3)).numpy()
    assert baseline_result.per_image["mse_ab"].to_numpy() == pytest.approx(per_image_ab2, rel=1e-5)
    assert s["mse_ab"]["mean"] == pytest.approx(per_image_ab2.mean(), rel=1e-5)
    assert s["colorfulness"]["mean"] < 1.0  # gray photos
    # the saved predictions are the gray images: L with ab = 0
    gray = lab.to_uint8(lab.colorize(L, torch.zeros_like(ab)).permute(0, 2, 3, 1))
    np.testing.assert_array_equal(baseline_result.rgb, gray)
    assert baseline_result.ids == shards.rows("test")["id"].tolist()


def test_model_predictions_are_clipped_colorized_images(model_result, study):
    L, _ = LabShards(study["shards"]).split("test")
    model = Checkpoint.load(study["A"]).model()
    with torch.no_grad():
        ab = model(L)
    expected = lab.to_uint8(lab.colorize(L, ab).permute(0, 2, 3, 1))
    assert model_result.rgb.shape == (N_TEST, SIZE, SIZE, 3) and model_result.rgb.dtype == np.uint8
    assert np.abs(model_result.rgb.astype(int) - expected.astype(int)).max() <= 1


def test_outputs_and_determinism(model_result, study, tmp_path):
    write_outputs(model_result, tmp_path / "r1", tmp_path / "p1.npz")
    again = evaluate(study["A"], study["shards"], PARAMS)
    write_outputs(again, tmp_path / "r2", tmp_path / "p2.npz")
    for name in ("metrics.json", "per_image.parquet"):
        assert (tmp_path / "r1" / name).read_bytes() == (tmp_path / "r2" / name).read_bytes(), name
    assert (tmp_path / "p1.npz").read_bytes() == (tmp_path / "p2.npz").read_bytes()
    table = pd.read_parquet(tmp_path / "r1" / "per_image.parquet")
    assert list(table.columns) == ["id", "path", "group", *IMAGE_METRICS]
    assert len(table) == N_TEST and table["path"].str.endswith(".jpg").all()
    ids, rgb = load_predictions(tmp_path / "p1.npz")
    assert ids == table["id"].tolist() and rgb.shape == (N_TEST, SIZE, SIZE, 3)
    # every number in metrics.json has at most 6 significant digits
    doc = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    for name in IMAGE_METRICS:
        for value in doc[name].values():
            assert float(f"{value:.6g}") == value


def test_fid_reference_gives_the_same_numbers(model_result, baseline_result, study, tmp_path):
    # the baseline's predictions file carries the ground truth's FID features ...
    write_outputs(baseline_result, tmp_path / "baseline", tmp_path / "baseline.npz")
    assert baseline_result.fid_true_features is not None and baseline_result.fid_true_features.shape == (N_TEST, 2048)
    # ... and a model scored against them gets exactly the numbers it gets alone
    reused = evaluate(study["A"], study["shards"], PARAMS, fid_reference=tmp_path / "baseline.npz")
    assert reused.summary == model_result.summary and reused.fid_true_features is None
    # features of other images (or another extractor/batching) are refused, naming the fix
    save_predictions(tmp_path / "other.npz", baseline_result.ids, baseline_result.rgb, fid_key="other",
                     fid_true_features=baseline_result.fid_true_features)
    with pytest.raises(ValueError, match="evaluate_baseline"):
        evaluate(study["A"], study["shards"], PARAMS, fid_reference=tmp_path / "other.npz")
    save_predictions(tmp_path / "plain.npz", baseline_result.ids, baseline_result.rgb)  # a model's: no features
    with pytest.raises(ValueError, match="no ground-truth FID features"):
        evaluate(study["A"], study["shards"], PARAMS, fid_reference=tmp_path / "plain.npz")


def run_stage(script: str, args: list[str], cwd: Path, monkeypatch) -> int:
    """A stage script's ``main`` in this process (no interpreter start-up), global torch state restored."""
    monkeypatch.chdir(cwd)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        return runpy.run_path(str(ROOT / "stages" / script), run_name="stage")["main"](args)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def test_stage_script(study, tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"evaluate": {"batch_size": 4, "bootstrap": 100, "seed": 1, "device": "cpu", "fid_weights": "random"}}))
    args = [BASELINE, str(study["shards"]), "eval/baseline", "preds/baseline.npz"]
    assert run_stage("evaluate.py", args, tmp_path, monkeypatch) == 0
    doc = json.loads((tmp_path / "eval/baseline/metrics.json").read_text())
    assert doc["n_images"] == N_TEST and doc["model"] == BASELINE
    assert (tmp_path / "eval/baseline/per_image.parquet").is_file() and (tmp_path / "preds/baseline.npz").is_file()
    model = [str(study["A"]), str(study["shards"]), "eval/A", "preds/A.npz", "--fid-reference", "preds/baseline.npz"]
    assert run_stage("evaluate.py", model, tmp_path, monkeypatch) == 0
    doc = json.loads((tmp_path / "eval/A/metrics.json").read_text())
    assert doc["model"] == "A" and math.isfinite(doc["fid"]) and RANDOM_NOTE in doc["provenance"]["fid"]
    assert f"FID {doc['fid']:.2f} (inception_fid: random init" in capsys.readouterr().out
    assert run_stage("evaluate.py", [str(tmp_path / "missing.pt"), *args[1:]], tmp_path, monkeypatch) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert run_stage("evaluate.py", args[:2], tmp_path, monkeypatch) == 2


# -- FID off (evaluate.fid_weights=none, the default) -------------------------------------------

def test_fid_off_changes_nothing_but_fid(model_result, baseline_result, tmp_path_factory):
    """No FID: no `fid` key, provenance saying why and how to turn it on, no truth features;
    every other number, the per-image table and the images are those of a run with FID."""
    for with_fid in (model_result, baseline_result):
        off = evaluated(tmp_path_factory, with_fid.model_id, NO_FID)
        assert "fid" not in off.summary and off.summary["provenance"]["fid"] == FID_NOT_COMPUTED
        assert off.fid_true_features is None and off.fid_key == ""
        assert off.summary["aggregation"].endswith("; fid not computed")
        assert with_fid.summary["aggregation"].endswith("; fid per set")
        assert "evaluate.fid_weights=imagenet" in FID_NOT_COMPUTED and "random" not in FID_NOT_COMPUTED
        same = {k: v for k, v in with_fid.summary.items() if k not in ("fid", "provenance", "aggregation")}
        assert {k: v for k, v in off.summary.items() if k not in ("provenance", "aggregation")} == same
        assert {k: v for k, v in off.summary["provenance"].items() if k != "fid"} == \
               {k: v for k, v in with_fid.summary["provenance"].items() if k != "fid"}
        pd.testing.assert_frame_equal(off.per_image, with_fid.per_image)
        np.testing.assert_array_equal(off.rgb, with_fid.rgb)


def test_fid_off_accepts_a_reference_without_features(baseline_result, study, tmp_path, tmp_path_factory):
    off = evaluated(tmp_path_factory, BASELINE, NO_FID)
    write_outputs(off, tmp_path / "baseline", tmp_path / "baseline.npz")
    with zipfile.ZipFile(tmp_path / "baseline.npz") as zf:  # the baseline's file: images only
        assert sorted(zf.namelist()) == ["ids.npy", "rgb.npy"]
    reused = evaluate(study["A"], study["shards"], NO_FID, fid_reference=tmp_path / "baseline.npz")
    assert reused.summary == evaluated(tmp_path_factory, "A", NO_FID).summary
    with pytest.raises(FileNotFoundError, match="missing.npz"):  # a wrong path on the command line still fails
        evaluate(study["A"], study["shards"], NO_FID, fid_reference=tmp_path / "missing.npz")
    # FID on against a baseline evaluated without it: the clear error, naming the stage to rerun
    with pytest.raises(ValueError, match="no ground-truth FID features"):
        evaluate(study["A"], study["shards"], PARAMS, fid_reference=tmp_path / "baseline.npz")


def _imported(stderr: str) -> set[str]:
    """Top-level packages a ``python -X importtime`` run imported."""
    return {line.split("|")[-1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:")}


def test_default_params_compute_no_fid_and_never_import_pytorch_fid(study, tmp_path):
    """The stages as dvc runs them, with params.yaml's default evaluate.fid_weights (none):
    neither the baseline nor a model (with the --fid-reference dvc.yaml passes) builds an Inception."""
    assert EvaluateParams().fid_weights == "none"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"batch_size": 4, "bootstrap": 100,
                                                                       "device": "cpu"}}))
    runs = {BASELINE: [BASELINE, str(study["shards"]), "eval/baseline", "preds/baseline.npz"],
            "A": [str(study["A"]), str(study["shards"]), "eval/A", "preds/A.npz", "--fid-reference",
                  "preds/baseline.npz"]}
    for model_id, args in runs.items():
        done = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "stages/evaluate.py"), *args],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        imported = _imported(done.stderr)
        assert "lpips" in imported and "pytorch_fid" not in imported, model_id  # lpips: the check sees imports
        assert f"FID {FID_NOT_COMPUTED} -> eval/{model_id}" in done.stdout
        doc = json.loads((tmp_path / f"eval/{model_id}/metrics.json").read_text())
        assert "fid" not in doc and doc["provenance"]["fid"] == FID_NOT_COMPUTED
