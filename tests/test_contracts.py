"""What every entry of each registry promises, checked for every entry: a new loss,
metric or source is held to it by adding its registry line, nothing else."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from colorstudy.config import DataParams
from colorstudy.data.sources import SOURCES, materialize, read_sources
from colorstudy.losses import LOSSES, build_loss
from colorstudy.metric_nets import LPIPSMetric
from colorstudy.metrics import METRICS, MetricBatch, compute

DESCRIPTIVE = {"colorfulness", "colorfulness_signed"}  # a property of the output, not a distance to the truth


@pytest.fixture(scope="module")
def lab_batch():
    g = torch.Generator().manual_seed(0)
    L = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
    ab = (torch.rand(2, 2, 32, 32, generator=g) * 2 - 1) * 0.3
    return L, ab


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_a_finite_scalar_with_a_gradient(name, lab_batch):
    L, ab = lab_batch
    pred = (ab.flip(0) * 0.5).requires_grad_(True)
    if name == "adversarial":
        term = build_loss(name, mode="bce")
        logits = pred.mean(dim=1, keepdim=True)  # a stand-in for the PatchGAN's patch logits
        value = term(logits)
    else:
        term = build_loss(name, **({"weights": "random"} if name == "perceptual" else {}))
        value = term(L, pred, ab)
        assert term(L, ab.clone(), ab).item() == pytest.approx(0.0, abs=1e-6)  # no loss on the truth
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def identical(lab_batch):
    L, ab = lab_batch
    return compute(MetricBatch.from_lab(L, ab, ab, lpips=LPIPSMetric("random")))


@pytest.mark.parametrize("name", sorted(n for n, m in METRICS.items() if m.scope == "image"))
def test_every_image_metric_gives_one_value_per_image_and_its_best_on_the_truth(name, identical):
    values = identical[name]
    assert values.shape == (2,) and not torch.isnan(values).any()
    if name in DESCRIPTIVE:
        return
    best = math.inf if METRICS[name].direction == "higher" else 0.0
    if name == "ssim":
        best = 1.0
    assert values.tolist() == pytest.approx([best, best], abs=1e-5), name


@pytest.mark.parametrize("name", sorted(n for n, m in METRICS.items() if m.scope == "set"))
def test_every_set_metric_is_zero_between_a_set_and_itself(name):
    feats = np.random.default_rng(0).normal(size=(64, 8))
    assert METRICS[name].fn(feats, feats) == pytest.approx(0.0, abs=1e-6)


OFFLINE_SOURCES = {"sample", "folder"}  # the others download their archives


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_runs_offline_or_names_what_is_missing(name, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    params = DataParams(dataset=name, path=str(photos), mirror=str(tmp_path / "empty-mirror"))
    (tmp_path / "empty-mirror").mkdir()
    if name in OFFLINE_SOURCES:
        rows = materialize(tmp_path / "raw", params)
        assert rows and read_sources(tmp_path / "raw") == rows
        assert all((tmp_path / "raw" / r.path).is_file() for r in rows)
    else:
        with pytest.raises(Exception, match=r"empty-mirror") as err:
            materialize(tmp_path / "raw", params)
        assert type(err.value).__name__ in ("DownloadError", "SourceError")
        assert not (tmp_path / "raw").exists()  # nothing half-made
