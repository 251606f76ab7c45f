"""The generator objective's terms: ``L_G = Σ λ_t · term_t`` (docs/study.md, "Losses").

Every term is a frozen ``nn.Module`` built by name from ``LOSSES`` through
``build_loss``; the training loop owns the weights λ and the discriminator.

* ``l1``, ``mse``, ``perceptual``: ``term(L_n, ab_pred, ab_true) -> scalar`` on
  normalized L and ab (``colorstudy.lab`` conventions).
* ``adversarial``: ``term(logits_fake) -> scalar``, the generator side (fake logits
  pushed towards "real"); ``discriminator_loss(term, logits_real, logits_fake)`` is
  the discriminator side. The *caller* detaches the fake ab before computing
  ``logits_fake`` for the discriminator step (the helper only sees logits, so it
  cannot), exactly as the pix2pix reference does.

Backbone-using terms expose ``.provenance`` (``colorstudy.weights``) so the
checkpoint and the report can say where the weights came from; the others have
``provenance = None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colorstudy import lab
from colorstudy.weights import IMAGENET_MEAN, IMAGENET_STD, RANDOM_BACKBONE_SEED, check_choice, load_state_dict

# Index of each tap in torchvision's ``vgg16().features`` (the ReLU after the conv).
VGG16_TAPS: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15}
DEFAULT_PERCEPTUAL_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3")
ADVERSARIAL_MODES: tuple[str, ...] = ("bce", "lsgan")


class LossTerm(nn.Module):
    """Base of the terms: frozen parameters, and no training mode to switch."""

    provenance: dict[str, Any] | None = None

    def train(self, mode: bool = True) -> LossTerm:
        # A loss must compute the same function whether or not the model trains.
        return super().train(False)


class L1Loss(LossTerm):
    """Mean absolute error on normalized ab."""

    def forward(self, L_n: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(ab_pred, ab_true)


class MSELoss(LossTerm):
    """Mean squared error on normalized ab."""

    def forward(self, L_n: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(ab_pred, ab_true)


class PerceptualLoss(LossTerm):
    """Mean over ``layers`` of the L1 distance between VGG16 features of the
    colorized photo (input L + predicted ab) and of the true photo.

    Both photos go through the same differentiable ``lab.colorize`` (which clips ab
    and the RGB gamut, so pure black/white pixels stay finite), then ImageNet
    mean/std normalization. ``weights="imagenet"`` loads the torch hub VGG16 file
    (``MissingWeightsError`` if absent and offline); ``"random"`` is VGG16's own init
    from a fixed seed, labelled as such in ``provenance``.
    """

    def __init__(self, weights: str = "random", layers: Sequence[str] = DEFAULT_PERCEPTUAL_LAYERS) -> None:
        super().__init__()
        check_choice(weights, "perceptual")
        unknown = [name for name in layers if name not in VGG16_TAPS]
        if unknown or not layers:
            raise ValueError(f"perceptual.layers: unknown or empty {list(unknown) or list(layers)}; "
                             f"choose from {list(VGG16_TAPS)}")
        self.layers = tuple(dict.fromkeys(layers))  # keep order, drop repeats
        taps = sorted(VGG16_TAPS[name] for name in self.layers)
        # Fetch (or fail on) the weights before building the network: fails fast, offline.
        state, self.provenance = load_state_dict("vgg16", weights)
        import torchvision  # here: seconds to import, and only the perceptual term needs it

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_BACKBONE_SEED)
            features = torchvision.models.vgg16(weights=None).features[: taps[-1] + 1]
        if state is not None:
            prefix = "features."
            features.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                      if k.startswith(prefix) and int(k.split(".")[1]) < len(features)})
        else:
            self.provenance = {**self.provenance, "seed": RANDOM_BACKBONE_SEED}
        self.features = features.requires_grad_(False)
        self._taps = frozenset(taps)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = (rgb - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                out.append(x)
        return out

    def forward(self, L_n: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        # The Lab -> sRGB conversion has powers and a 3x3 matrix that bf16 would ruin;
        # only the VGG convolutions may run under the caller's autocast.
        with torch.autocast(L_n.device.type, enabled=False):
            pred = lab.colorize(L_n.float(), ab_pred.float())
            with torch.no_grad():
                true = lab.colorize(L_n.float(), ab_true.float())
        feats_pred = self._features(pred)
        with torch.no_grad():
            feats_true = self._features(true)
        return torch.stack([F.l1_loss(p.float(), t.float()) for p, t in zip(feats_pred, feats_true)]).mean()


class AdversarialLoss(LossTerm):
    """Generator side of the GAN objective: ``forward(logits_fake)``, the
    discriminator's logits for (L, predicted ab), pushed towards "real".

    ``mode="bce"`` is BCE-with-logits (the reference study, pix2pix); ``"lsgan"`` is
    the least-squares GAN: MSE of the raw logits to 1 (real) / 0 (fake).
    """

    def __init__(self, mode: str = "bce") -> None:
        super().__init__()
        if mode not in ADVERSARIAL_MODES:
            raise ValueError(f"adversarial.mode must be one of {list(ADVERSARIAL_MODES)}, got {mode!r}")
        self.mode = mode

    def criterion(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """Mean loss of ``logits`` against the all-real (or all-fake) target."""
        logits = logits.float()  # a numerically safe sum under bf16 autocast
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        if self.mode == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)

    def forward(self, logits_fake: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits_fake, real=True)


def discriminator_loss(adversarial: AdversarialLoss, logits_real: torch.Tensor,
                       logits_fake: torch.Tensor) -> torch.Tensor:
    """``(loss(real pairs → real) + loss(fake pairs → fake)) / 2``, in the mode of
    ``adversarial``. ``logits_fake`` must come from the *detached* predicted ab
    (the caller's job) so the discriminator step does not update the generator."""
    return 0.5 * (adversarial.criterion(logits_real, real=True) + adversarial.criterion(logits_fake, real=False))


LOSSES: dict[str, Callable[..., LossTerm]] = {
    "l1": L1Loss,
    "mse": MSELoss,
    "perceptual": PerceptualLoss,
    "adversarial": AdversarialLoss,
}


def build_loss(name: str, **kwargs: Any) -> LossTerm:
    """The loss term ``name`` from ``LOSSES``, with its options (e.g. ``weights``,
    ``layers`` for perceptual; ``mode`` for adversarial)."""
    try:
        builder = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss term {name!r}; known: {sorted(LOSSES)}") from None
    return builder(**kwargs)
