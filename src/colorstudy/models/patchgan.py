"""``patchgan``: the pix2pix 70x70 PatchGAN discriminator, conditioned on L.

It judges overlapping patches rather than the whole image, which pushes the
generator towards locally plausible color (the L1 term takes care of the global).
"""

from __future__ import annotations

import torch
from torch import nn

from colorstudy.models.blocks import init_pix2pix, require_positive


PUBLISHED_PATCH, PUBLISHED_SIZE = 70, 256  # pix2pix: 70x70 patches on 256x256 images


def receptive_field(layers: int) -> int:
    """Side of the input patch one logit sees: 16, 34, 70, 142, 286 for 1..5 layers."""
    field = 4 + 3  # the two stride-1 4x4 convs at the end
    for _ in range(layers):
        field = (field - 1) * 2 + 4
    return field


def layers_for(image_size: int) -> int:
    """The deepest PatchGAN whose patch is at most the share of the image that pix2pix's
    70x70 patch is of 256 px (27 %): 3 layers at 256 px, 2 at 128, 1 at 64. With 3
    layers at 64 px a logit would see more than the whole image: a global discriminator,
    not a patch one."""
    layers = 1
    while layers < 5 and receptive_field(layers + 1) * PUBLISHED_SIZE <= PUBLISHED_PATCH * image_size:
        layers += 1
    return layers


class PatchGAN(nn.Module):
    """``forward(L, ab)`` -> a ``[B,1,h,w]`` map of logits (no sigmoid: the losses
    take logits). ``layers`` stride-2 4x4 convs (channels width -> 8*width capped),
    then two stride-1 4x4 convs; ``layers=3`` gives the 70x70 receptive field and
    about 2.8 M parameters at ``width=64``.
    """

    def __init__(self, width: int = 64, layers: int = 3) -> None:
        require_positive("patchgan", width=width, layers=layers)
        super().__init__()
        channels = [width * min(2 ** n, 8) for n in range(layers + 1)]
        body: list[nn.Module] = [nn.Conv2d(3, channels[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for n in range(1, layers + 1):
            stride = 2 if n < layers else 1
            body += [nn.Conv2d(channels[n - 1], channels[n], 4, stride, 1, bias=False),
                     nn.BatchNorm2d(channels[n]), nn.LeakyReLU(0.2, inplace=True)]
        body.append(nn.Conv2d(channels[layers], 1, 4, 1, 1))
        self.model = nn.Sequential(*body)
        init_pix2pix(self)

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        if L.shape[1] != 1 or ab.shape[1] != 2 or L.shape[-2:] != ab.shape[-2:]:
            raise ValueError(f"PatchGAN expects L [B,1,H,W] and ab [B,2,H,W], got {tuple(L.shape)} "
                             f"and {tuple(ab.shape)}")
        return self.model(torch.cat([L, ab], dim=1))
