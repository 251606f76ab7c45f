"""What the architectures share: the generator contract, pix2pix init and conv blocks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colorstudy import lab
from colorstudy.weights import IMAGENET_MEAN, IMAGENET_STD, check_choice


def require_positive(owner: str, **values: int) -> None:
    """Reject sizes a network cannot be built with, naming the argument."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def init_pix2pix(module: nn.Module) -> None:
    """pix2pix's init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0.

    It draws from torch's global generator, so the caller's ``torch.manual_seed``
    makes a model's initial weights reproducible.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def halvings(image_size: int) -> int:
    """How many times 2 divides ``image_size``: the downsamplings an image of it allows."""
    return (image_size & -image_size).bit_length() - 1


class Generator(nn.Module):
    """Normalized L ``[B,1,H,W]`` -> normalized ab ``[B,2,H,W]`` in (-1, 1).

    Subclasses implement :meth:`predict` (pre-tanh ab); the shape checks and the
    output squashing live here so every architecture fails and scales alike.
    ``stride`` is the total downsampling: H and W must be multiples of it.
    ``provenance`` records where pretrained weights came from ({} when none).
    """

    stride: int
    provenance: dict[str, Any]

    @staticmethod
    def arguments_for(image_size: int) -> dict[str, Any]:
        """Arguments this architecture takes from the image size (registry metadata: the
        study passes them to every model of this kind unless ``models.<id>.arch`` says otherwise)."""
        return {}

    def __init__(self, stride: int, weights: str, provenance: dict[str, Any] | None = None) -> None:
        super().__init__()
        check_choice(weights, type(self).__name__)
        self.stride = stride
        self.provenance = provenance or {}

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"{name} expects normalized L as [B,1,H,W], got shape {tuple(L.shape)}")
        h, w = L.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(
                f"{name}: input size {h}x{w} is not divisible by the model's stride {self.stride}; "
                f"resize or crop H and W to multiples of {self.stride}")
        return torch.tanh(self.predict(L))

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def imagenet_input(L_n: torch.Tensor) -> torch.Tensor:
    """Normalized L ``[B,1,H,W]`` -> the gray photo as an ImageNet backbone was trained to see
    it: sRGB in [0, 1] with R = G = B (the neutral color of that lightness), then the
    per-channel ImageNet mean/std. ``L/50 - 1`` fed to summed RGB filters is not that input.

    Called inside the generator's forward, i.e. under the training loop's bf16 autocast on a
    GPU: the conversion runs outside it, in float32, or R, G and B would differ by up to
    0.0117 and the encoder would no longer see a gray photo."""
    with torch.autocast(L_n.device.type, enabled=False):
        L32 = L_n.float()
        gray = lab.colorize(L32, torch.zeros_like(L32).expand(-1, 2, -1, -1))
    mean = torch.tensor(IMAGENET_MEAN, device=L_n.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=L_n.device).view(1, 3, 1, 1)
    return (gray - mean) / std


def conv_bn_relu(cin: int, cout: int, *, stride: int = 1, dilation: int = 1, relu: bool = True) -> nn.Sequential:
    """3x3 conv (no bias: the BatchNorm after it has one), BatchNorm, optional ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UpBlock(nn.Module):
    """x2 upsampling, concatenation with an encoder skip (if any), two 3x3 convs.

    Nearest-neighbour upsampling plus a conv rather than a transposed conv: no
    checkerboard artifacts, and its CUDA backward is deterministic (bilinear's is not).
    """

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(cin + skip, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)
