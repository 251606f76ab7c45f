"""The generator objective's terms: values, gradients, weights handling, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import colorstudy  # noqa: F401  (torchvision shim)
from colorstudy import lab, losses
from colorstudy.weights import MissingWeightsError

FACES = Path(__file__).resolve().parents[1] / "../shared/datasets/faces"



@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized (L, ab) of two real face photos, 64x64."""
    if not FACES.is_dir():
        pytest.skip("shared datasets not mounted")
    arr = np.stack([np.asarray(Image.open(FACES / f"image{i:05d}.jpg").convert("RGB").resize((64, 64)))
                    for i in (3, 11)])
    lab_ = lab.rgb_to_lab(torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0)
    return lab.normalize_l(lab_[:, :1]), lab.normalize_ab(lab_[:, 1:])


@pytest.fixture(scope="module")
def perceptual() -> losses.PerceptualLoss:
    return losses.build_loss("perceptual", weights="random")


def _pred(ab_true: torch.Tensor) -> torch.Tensor:
    return (0.5 * ab_true + 0.1).clone().requires_grad_(True)


@pytest.mark.parametrize("name, reference", [("l1", F.l1_loss), ("mse", F.mse_loss)])
def test_regression_terms(batch, name, reference):
    L_n, ab = batch
    term = losses.build_loss(name)
    assert term(L_n, ab, ab).item() == 0.0
    pred = _pred(ab)
    value = term(L_n, pred, ab)
    assert value.item() == pytest.approx(reference(pred, ab).item()) and value.item() > 0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert term.provenance is None


def test_perceptual_gives_gradients_and_is_zero_at_equality(batch, perceptual):
    L_n, ab = batch
    assert perceptual(L_n, ab, ab).item() == pytest.approx(0.0, abs=1e-7)
    pred = _pred(ab)
    value = perceptual(L_n, pred, ab)
    assert value.ndim == 0 and torch.isfinite(value) and value.item() > 0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # the backbone is frozen: nothing in it receives a gradient
    assert all(p.grad is None and not p.requires_grad for p in perceptual.parameters())


def test_perceptual_is_finite_at_pure_black_and_white(perceptual):
    L_n = torch.ones(2, 1, 32, 32)
    L_n[0] = -1.0  # black
    L_n[1, :, :, :16] = -1.0  # half black, half white
    ab_true = torch.zeros(2, 2, 32, 32)
    pred = torch.tanh(torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    value = perceptual(L_n, pred, ab_true)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
    # and at the extremes of the ab range, where colorize clips
    extreme = torch.full((2, 2, 32, 32), 1.0, requires_grad=True)
    perceptual(L_n, extreme, ab_true).backward()
    assert torch.isfinite(extreme.grad).all()


def test_perceptual_stays_frozen_and_reproducible(batch, perceptual):
    L_n, ab = batch
    perceptual.train()
    assert not perceptual.training and not perceptual.features.training
    pred = 0.5 * ab
    again = losses.build_loss("perceptual", weights="random")
    assert perceptual(L_n, pred, ab).item() == again(L_n, pred, ab).item()
    assert perceptual.provenance["weights"] == "random" and perceptual.provenance["seed"] == 0


def test_perceptual_layers_option(batch, perceptual):
    L_n, ab = batch
    pred = 0.5 * ab
    feats_pred = perceptual._features(lab.colorize(L_n, pred))
    feats_true = perceptual._features(lab.colorize(L_n, ab))
    per_layer = [F.l1_loss(p, t).item() for p, t in zip(feats_pred, feats_true)]
    assert len(per_layer) == 3
    assert perceptual(L_n, pred, ab).item() == pytest.approx(sum(per_layer) / 3, rel=1e-5)
    shallow = losses.build_loss("perceptual", layers=["relu1_2"])
    assert len(shallow.features) == losses.VGG16_TAPS["relu1_2"] + 1  # only what the taps need
    assert shallow(L_n, pred, ab).item() == pytest.approx(per_layer[0], rel=1e-5)  # same seeded weights
    with pytest.raises(ValueError, match="relu1_2"):
        losses.build_loss("perceptual", layers=["relu9_9"])


def test_perceptual_under_bf16_autocast(batch, perceptual):
    L_n, ab = batch
    pred = _pred(ab)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = perceptual(L_n, pred, ab)
    value.float().backward()
    assert torch.isfinite(value) and value.item() > 0 and torch.isfinite(pred.grad).all()


def test_perceptual_imagenet_missing_weights_fail_clearly(offline_hub):
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        losses.build_loss("perceptual", weights="imagenet")
    assert offline_hub.attempts == ["https://download.pytorch.org/models/vgg16-397923af.pth"]


def test_perceptual_imagenet_loads_the_cached_file(offline_hub, batch):
    import torchvision

    torch.manual_seed(5)
    features = torchvision.models.vgg16(weights=None).features[:16]
    # a stand-in for the real file: the same keys for the layers the loss uses
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    offline_hub.checkpoints.mkdir(parents=True)
    torch.save(state, offline_hub.checkpoints / "vgg16-397923af.pth")
    term = losses.build_loss("perceptual", weights="imagenet")
    torch.testing.assert_close(term.features[14].weight, state["features.14.weight"])
    assert term.provenance["weights"] == "imagenet" and len(term.provenance["sha256"]) == 64
    assert torch.isfinite(term(*batch[:1], 0.5 * batch[1], batch[1])) and not offline_hub.attempts


def test_unknown_weights_choice_is_rejected():
    with pytest.raises(ValueError, match="imagenet"):
        losses.build_loss("perceptual", weights="pretrained")


# -- adversarial ---------------------------------------------------------------------------

LOGITS = torch.tensor([[-2.0, 0.0], [1.0, 3.0]]).view(1, 1, 2, 2)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_adversarial_bce_values():
    adv = losses.build_loss("adversarial", mode="bce")
    xs = LOGITS.flatten().tolist()
    # generator: -log(sigmoid(x)) = softplus(-x), averaged over the patch map
    assert adv(LOGITS).item() == pytest.approx(np.mean([_softplus(-x) for x in xs]), rel=1e-6)
    real, fake = LOGITS, -LOGITS
    expected = 0.5 * (np.mean([_softplus(-x) for x in xs]) + np.mean([_softplus(-x) for x in xs]))
    assert losses.discriminator_loss(adv, real, fake).item() == pytest.approx(expected, rel=1e-6)
    # a confident, correct discriminator has a small loss; a fooled one a large loss
    big = torch.full((1, 1, 2, 2), 20.0)
    assert losses.discriminator_loss(adv, big, -big).item() < 1e-6
    assert losses.discriminator_loss(adv, -big, big).item() == pytest.approx(20.0, rel=1e-6)


def test_adversarial_lsgan_values():
    adv = losses.build_loss("adversarial", mode="lsgan")
    xs = np.array(LOGITS.flatten().tolist())
    assert adv(LOGITS).item() == pytest.approx(np.mean((xs - 1.0) ** 2))
    ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert losses.discriminator_loss(adv, ones, zeros).item() == 0.0
    expected = 0.5 * (np.mean((xs - 1.0) ** 2) + np.mean(xs**2))
    assert losses.discriminator_loss(adv, LOGITS, LOGITS).item() == pytest.approx(expected)


def test_adversarial_gradient_reaches_the_generator_output(batch):
    L_n, ab = batch
    torch.manual_seed(0)
    disc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(4, 1, 4, 1, 1))
    pred = _pred(ab)
    for mode in ("bce", "lsgan"):
        adv = losses.build_loss("adversarial", mode=mode)
        pred.grad = None
        adv(disc(torch.cat((L_n, pred), 1))).backward()
        assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
        # the discriminator step sees the detached fake: no gradient to the generator
        pred.grad = None
        losses.discriminator_loss(adv, disc(torch.cat((L_n, ab), 1)),
                                  disc(torch.cat((L_n, pred.detach()), 1))).backward()
        assert pred.grad is None


def test_adversarial_bf16_logits_are_computed_in_float32():
    adv = losses.build_loss("adversarial")
    value = adv(LOGITS.bfloat16())
    assert value.dtype == torch.float32


def test_adversarial_unknown_mode():
    with pytest.raises(ValueError, match="bce"):
        losses.build_loss("adversarial", mode="wgan")


# -- registry -------------------------------------------------------------------------------

def test_registry_and_unknown_name():
    assert set(losses.LOSSES) == {"l1", "mse", "perceptual", "adversarial"}
    with pytest.raises(ValueError, match=r"unknown loss term 'ssim'.*adversarial.*l1.*mse.*perceptual"):
        losses.build_loss("ssim")
    with pytest.raises(TypeError):
        losses.build_loss("l1", weights="random")  # options a term does not take fail loudly
