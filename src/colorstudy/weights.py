"""Pretrained backbone weights: the torch hub cache, their provenance, and clear errors.

A number computed through a backbone (perceptual loss, LPIPS, FID, a pretrained
encoder) depends on its weights, so every load returns a provenance record that the
checkpoint and the report carry next to the number. ``random`` is an explicit choice
in params, never a fallback: missing ``imagenet`` weights stop the run with a message
that names the file, its URL and where to put it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WEIGHT_CHOICES: tuple[str, ...] = ("imagenet", "random")
RANDOM_NOTE = "random init (not comparable to published numbers)"
# Seeds every `random` backbone (perceptual VGG16, LPIPS AlexNet, FID Inception), so a
# random-backbone loss or metric is the same function in every run and on resume.
RANDOM_BACKBONE_SEED = 0
# What every ImageNet-trained torchvision backbone was trained on: sRGB in [0, 1], normalized per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    file: str
    url: str
    purpose: str


BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
                      "perceptual loss"),
    "resnet34": Backbone("resnet34-b627a593.pth", "https://download.pytorch.org/models/resnet34-b627a593.pth",
                         "resnet_unet encoder"),
    "alexnet": Backbone("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                        "LPIPS"),
    "inception_fid": Backbone(
        "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "FID"),
}


class MissingWeightsError(RuntimeError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""


def cache_dir() -> Path:
    """Where torch hub keeps checkpoints: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def check_choice(choice: str, where: str) -> None:
    if choice not in WEIGHT_CHOICES:
        raise ValueError(f"{where}: weights must be one of {list(WEIGHT_CHOICES)}, got {choice!r}")


@functools.lru_cache(maxsize=None)
def _sha256(path: Path, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(name: str, choice: str) -> dict[str, Any]:
    """What a report says about a backbone's weights (without loading them)."""
    if choice == "random":
        return {"backbone": name, "weights": "random", "note": RANDOM_NOTE}
    spec = backbone(name)
    path = cache_dir() / spec.file
    out: dict[str, Any] = {"backbone": name, "weights": "imagenet", "file": spec.file, "url": spec.url}
    if path.exists():
        stat = path.stat()
        out["sha256"] = _sha256(path, stat.st_size, stat.st_mtime)
    return out


def weights_path(name: str) -> Path:
    """The cached file for ``name``, fetched if possible; else a MissingWeightsError."""
    spec = backbone(name)
    path = cache_dir() / spec.file
    if path.exists():
        return path
    try:
        torch.hub.download_url_to_file(spec.url, str(path), progress=True)
        return path
    except Exception as e:  # offline: URLError, socket errors, HTTP errors
        path.unlink(missing_ok=True)
        raise MissingWeightsError(
            f"ImageNet weights for {name} ({spec.purpose}) are not in the torch hub cache and could "
            f"not be downloaded ({type(e).__name__}: {e}).\n"
            f"  file: {spec.file}\n  URL:  {spec.url}\n  put it at: {path}\n"
            f"(set TORCH_HOME to use another cache), or set the weights param to `random` "
            f"to run with a randomly initialized {name}; reports then label those numbers."
        ) from e


def load_state_dict(name: str, choice: str) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """``(state_dict or None for random, provenance)`` for backbone ``name``."""
    check_choice(choice, name)
    if choice == "random":
        return None, provenance(name, choice)
    path = weights_path(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, provenance(name, choice)


def describe(prov: dict[str, Any]) -> str:
    """One short label for a report cell, e.g. ``vgg16: imagenet (sha256 397923af…)``."""
    if prov.get("weights") == "random":
        return f"{prov['backbone']}: {RANDOM_NOTE}"
    digest = prov.get("sha256", "")
    return f"{prov['backbone']}: imagenet ({prov.get('file')}{', sha256 ' + digest[:12] if digest else ''})"
