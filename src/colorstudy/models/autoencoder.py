"""``autoencoder``: a plain convolutional encoder-decoder without skip connections.

The first model of two of the source studies: everything the decoder knows passes
through the bottleneck, which is what the skip-connected models are compared against.
"""

from __future__ import annotations

import torch
from torch import nn

from colorstudy.models.blocks import Generator, UpBlock, conv_bn_relu, init_pix2pix, require_positive


class Autoencoder(Generator):
    """``depth`` stride-2 levels (3x3 convs, channels width -> 8*width capped), mirrored
    by nearest-upsampling conv blocks; stride ``2**depth``."""

    def __init__(self, width: int = 64, weights: str = "random", depth: int = 4) -> None:
        require_positive("autoencoder", width=width, depth=depth)
        super().__init__(stride=2 ** depth, weights=weights)
        channels = [width * min(2 ** i, 8) for i in range(depth + 1)]
        self.encoder = nn.Sequential(
            conv_bn_relu(1, channels[0]),
            *(nn.Sequential(conv_bn_relu(channels[i], channels[i + 1], stride=2),
                            conv_bn_relu(channels[i + 1], channels[i + 1]))
              for i in range(depth)))
        self.decoder = nn.Sequential(*(UpBlock(channels[i + 1], 0, channels[i]) for i in reversed(range(depth))))
        self.head = nn.Conv2d(channels[0], 2, 3, padding=1)
        init_pix2pix(self)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(L)))
