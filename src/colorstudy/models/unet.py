"""``unet``: the pix2pix U-Net generator (Isola et al. 2017), the reference study's model.

At ``depth=8`` on 256x256 it is pix2pix's ``unet_256``: 4x4 stride-2 convs down to a
1x1 bottleneck (64 -> 512 channels), a mirrored transposed-conv decoder that
concatenates the encoder feature of the same resolution, about 54 M parameters with
1 input and 2 output channels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from colorstudy.models.blocks import Generator, halvings, init_pix2pix, require_positive

DROPOUT_BLOCKS = 3  # innermost decoder blocks with dropout, the pix2pix noise source


class UNet(Generator):
    """pix2pix U-Net with ``depth`` stride-2 levels; stride ``2**depth``.

    Down level i: LeakyReLU(0.2), 4x4 stride-2 conv, BatchNorm. The outermost has
    neither activation nor norm (it sees the raw input), the innermost no norm (its
    output is 1x1 at depth 8, where per-sample statistics are meaningless).
    Up level i: ReLU, 4x4 stride-2 transposed conv, BatchNorm, dropout 0.5 in the 3
    innermost blocks, as the paper's decoder (CD512-CD1024-CD1024-C1024...); the
    outermost up block maps straight to ab.
    """

    @staticmethod
    def arguments_for(image_size: int) -> dict[str, Any]:
        # pix2pix downsamples to 1x1: 8 levels at 256 px, fewer for smaller images.
        return {"depth": min(8, halvings(image_size))}

    def __init__(self, width: int = 64, weights: str = "random", depth: int = 8) -> None:
        require_positive("unet", width=width, depth=depth)
        super().__init__(stride=2 ** depth, weights=weights)
        channels = [width * min(2 ** i, 8) for i in range(depth)]
        innermost = depth - 1
        downs: list[nn.Module] = [nn.Conv2d(1, channels[0], 4, 2, 1, bias=False)]
        for i in range(1, depth):
            norm = [] if i == innermost else [nn.BatchNorm2d(channels[i])]
            downs.append(nn.Sequential(
                nn.LeakyReLU(0.2), nn.Conv2d(channels[i - 1], channels[i], 4, 2, 1, bias=False), *norm))
        ups: list[nn.Module] = []
        for i in range(depth):
            # every level but the innermost receives its up-path input concatenated with its skip
            cin = channels[i] if i == innermost else 2 * channels[i]
            if i == 0:
                ups.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, 2, 4, 2, 1)))
                continue
            dropout = [nn.Dropout(0.5)] if i > innermost - DROPOUT_BLOCKS else []
            ups.append(nn.Sequential(
                nn.ReLU(), nn.ConvTranspose2d(cin, channels[i - 1], 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels[i - 1]), *dropout))
        self.downs = nn.ModuleList(downs)
        self.ups = nn.ModuleList(ups)
        init_pix2pix(self)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        skips = []
        x = L
        for down in self.downs:
            x = down(x)
            skips.append(x)
        for i in reversed(range(len(self.ups))):
            if i < len(self.ups) - 1:
                x = torch.cat([skips[i], x], dim=1)
            x = self.ups[i](x)
        return x
