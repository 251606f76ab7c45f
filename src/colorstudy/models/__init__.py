"""The model zoo: one registry of generators and one of discriminators, timm-style.

Each architecture lives in its own module; a registry entry maps the name used in
``params.yaml`` and in checkpoints to its builder. Every generator builder takes
``width`` (base channels, 64 = the published size), ``weights`` ("random" |
"imagenet", used only by architectures with a pretrained part) and its own depth
knobs, all JSON-able, so a checkpoint rebuilds its model from
``build_generator(arch, **arch_kwargs, weights="random")`` plus the state dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from colorstudy.models.autoencoder import Autoencoder
from colorstudy.models.blocks import Generator, init_pix2pix
from colorstudy.models.deep_cnn import DeepCNN
from colorstudy.models.densenet import DenseNet
from colorstudy.models.patchgan import PatchGAN
from colorstudy.models.resnet_encdec import ResNetEncoderDecoder
from colorstudy.models.resnet_unet import ResNetUNet
from colorstudy.models.unet import UNet

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "autoencoder": Autoencoder,
    "deep_cnn": DeepCNN,
    "unet": UNet,
    "resnet_unet": ResNetUNet,
    "resnet_encdec": ResNetEncoderDecoder,
    "densenet": DenseNet,
}

DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "patchgan": PatchGAN,
}


def _build(kind: str, registry: Mapping[str, Callable[..., nn.Module]], name: str,
           kwargs: dict[str, Any]) -> nn.Module:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {sorted(registry)}")
    builder = registry[name]
    accepted = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} got unknown argument(s) {unknown}; it accepts {accepted}")
    return builder(**kwargs)


def build_generator(name: str, **kwargs: Any) -> nn.Module:
    """The generator registered as ``name``, e.g. ``build_generator("unet", width=16, depth=6)``."""
    return _build("generator", GENERATORS, name, kwargs)


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """The discriminator registered as ``name``, e.g. ``build_discriminator("patchgan", width=64)``."""
    return _build("discriminator", DISCRIMINATORS, name, kwargs)


__all__ = ["DISCRIMINATORS", "GENERATORS", "Generator", "build_discriminator", "build_generator",
           "init_pix2pix"]
