"""The networks behind LPIPS and FID (AlexNet with the lpips heads, pytorch-fid's
Inception), frozen and loaded from the torch hub cache or seeded random, and the
Fréchet distance between two sets of their features."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from colorstudy.lab import as_unit_rgb
from colorstudy.weights import RANDOM_BACKBONE_SEED, check_choice, load_state_dict, provenance

FID_DIMS = 2048


# -- backbones ------------------------------------------------------------------------

def _heads_file() -> str:
    return f"lpips {importlib.metadata.version('lpips')}: weights/v0.1/alex.pth (linear heads, shipped in the package)"


def metric_provenance(lpips_weights: str = "random", fid_weights: str = "random") -> dict[str, dict[str, Any]]:
    """Where the LPIPS and FID backbones' weights come from, without loading them:
    ``{"lpips": {...}, "fid": {...}}`` (file, URL and sha256 when cached, or
    random init with its seed). ``LPIPSMetric`` / ``FIDExtractor`` carry the same
    record as ``.provenance``."""
    check_choice(lpips_weights, "evaluate.lpips_weights")
    check_choice(fid_weights, "evaluate.fid_weights")
    return {"lpips": _backbone_record("alexnet", lpips_weights, linear_heads=_heads_file()),
            "fid": _backbone_record("inception_fid", fid_weights)}


def _backbone_record(name: str, choice: str, **extra: str) -> dict[str, Any]:
    seeded = {"seed": RANDOM_BACKBONE_SEED} if choice == "random" else {}
    return {**provenance(name, choice), **seeded, **extra}


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the CPU generator for a backbone's init without disturbing the caller's stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _FrozenMetricNet(nn.Module):
    provenance: dict[str, Any]

    def train(self, mode: bool = True) -> _FrozenMetricNet:
        return super().train(False)  # a metric has no training mode (LPIPS has dropout)


class LPIPSMetric(_FrozenMetricNet):
    """LPIPS distance per image: ``lpips`` package, ``net="alex"``, v0.1 heads.

    ``weights="imagenet"``: torchvision's AlexNet file via ``colorstudy.weights``;
    ``"random"``: the package's random-trunk option (``pnet_rand=True``) from a fixed
    seed. Either way the trunk is built without weights, so lpips never reaches for
    the network; ImageNet weights are then loaded into it.
    """

    def __init__(self, weights: str = "random", device: torch.device | str | None = None) -> None:
        super().__init__()
        check_choice(weights, "evaluate.lpips_weights")
        import lpips  # torchvision-dependent: import after colorstudy's shim (done by now)

        state, _ = load_state_dict("alexnet", weights)
        with _seeded(RANDOM_BACKBONE_SEED), warnings.catch_warnings():
            # lpips builds its trunk with torchvision's deprecated `pretrained=False`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            self.net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        if state is not None:
            self.net.net.load_state_dict(_alexnet_to_lpips_slices(self.net.net, state))
        self.provenance = _backbone_record("alexnet", weights, linear_heads=_heads_file())
        self.requires_grad_(False).eval().to(device)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[B]`` distances of sRGB ``[B,3,H,W]`` in [0, 1]."""
        return self.net(as_unit_rgb(pred).float(), as_unit_rgb(target).float(), normalize=True).flatten()


def _alexnet_to_lpips_slices(trunk: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision AlexNet keys ``features.<i>.*`` -> lpips' ``slice<k>.<i>.*`` (lpips
    keeps each layer's index inside its slice)."""
    where = {index: f"{slice_name}.{index}" for slice_name, module in trunk.named_children()
             for index, _ in module.named_children()}
    out = {}
    for key, value in state.items():
        part, index, param = key.split(".", 2) if key.count(".") >= 2 else (key, "", "")
        if part == "features" and index in where:
            out[f"{where[index]}.{param}"] = value
    return out


class FIDExtractor(_FrozenMetricNet):
    """pytorch-fid's InceptionV3 up to pool3: sRGB ``[B,3,H,W]`` in [0, 1] (any size;
    resized to 299 inside) -> ``[B, 2048]`` features.

    ``weights="imagenet"``: the FID Inception file (``inception_fid``) via
    ``colorstudy.weights``. ``"random"``: the same architecture with He-normal conv
    weights from a fixed seed; PyTorch's default init shrinks activations about 6x
    per layer, which would leave pool3 ~1e-8 and every FID ~0.
    """

    def __init__(self, weights: str = "random", device: torch.device | str | None = None) -> None:
        super().__init__()
        check_choice(weights, "evaluate.fid_weights")
        state, _ = load_state_dict("inception_fid", weights)
        self.net = _fid_inception(state)
        self.provenance = _backbone_record("inception_fid", weights)
        self.requires_grad_(False).eval().to(device)
        # CPU: oneDNN's channels-last convolutions and pools, ~1.5x faster than NCHW at every
        # batch size; the same arithmetic up to float32 summation order (features within ~1e-6)
        self.layout = "channels_last" if next(self.parameters()).device.type == "cpu" else "contiguous"
        if self.layout == "channels_last":
            self.net.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = as_unit_rgb(images).float()
        if self.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)[0].flatten(1)

    def features(self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 32) -> np.ndarray:
        """Float64 ``[N, 2048]`` features of a set: one ``[N,3,H,W]`` tensor (run in
        batches of ``batch_size``) or an iterable of batches."""
        batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
        device = next(self.parameters()).device
        feats = [self(batch.to(device)).double().cpu().numpy() for batch in batches]
        return np.concatenate(feats) if feats else np.empty((0, FID_DIMS))


def _fid_inception(state: dict[str, torch.Tensor] | None) -> nn.Module:
    """pytorch-fid's ``InceptionV3`` (pool3 only) without its download.

    ``InceptionV3()`` fetches its weights from GitHub in the middle of building the
    FID variant; the fetch is redirected to ``state`` (the verified cached file), or,
    for random init, to the freshly built network's own weights (a no-op load).
    """
    import pytorch_fid.inception as fid_inception  # torchvision-dependent, see LPIPSMetric

    built: list[nn.Module] = []

    def build(*args: Any, **kwargs: Any) -> nn.Module:
        built.append(original_build(*args, **kwargs))
        return built[-1]

    def weights_instead_of_download(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return state if state is not None else built[-1].state_dict()

    original_build = fid_inception._inception_v3
    pool3 = fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]
    with _seeded(RANDOM_BACKBONE_SEED), \
            mock.patch.object(fid_inception, "_inception_v3", build), \
            mock.patch.object(fid_inception, "load_state_dict_from_url", weights_instead_of_download):
        net = fid_inception.InceptionV3([pool3])
        if state is None:
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    return net


# -- FID --------------------------------------------------------------------------------

def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]``.

    With more images than dimensions this is
    ``pytorch_fid.fid_score.calculate_frechet_distance`` on the means and
    covariances. With fewer (every CPU-sized test set: N < 2048), the covariances
    are singular and that route (a 2048x2048 ``sqrtm``, about a minute on 2 cores)
    is both slow and inexact; the same quantity is then computed exactly in the
    N-dimensional span of the data: with ``Σ_a = AAᵀ``, ``Σ_b = BBᵀ`` (A, B the
    centered features / sqrt(N-1)), ``Tr √(Σ_a Σ_b)`` is the nuclear norm of ``AᵀB``.
    """
    a, b = (np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64)
            for f in (feats_a, feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two [N, D] feature sets of the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 images per set (a covariance), got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    if min(len(a), len(b)) > a.shape[1]:
        from pytorch_fid.fid_score import calculate_frechet_distance

        return float(calculate_frechet_distance(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False)))
    A = (a - mu_a) / math.sqrt(len(a) - 1)
    B = (b - mu_b) / math.sqrt(len(b) - 1)
    tr_sqrt = np.linalg.svd(A @ B.T, compute_uv=False).sum()
    return float(np.square(mu_a - mu_b).sum() + np.square(A).sum() + np.square(B).sum() - 2.0 * tr_sqrt)


def fid(pred_images: torch.Tensor | Iterable[torch.Tensor], true_images: torch.Tensor | Iterable[torch.Tensor],
        extractor: FIDExtractor, batch_size: int = 32) -> float:
    """FID of a colorized set against its ground truth (each a tensor or batches)."""
    return frechet_distance(extractor.features(pred_images, batch_size), extractor.features(true_images, batch_size))
