"""``deep_cnn``: a deep CNN at full resolution with a residual skip every 3 conv layers.

From the "six architectures" source study, designed for 128x128. Without any
downsampling a stack of 3x3 convs sees only a small neighbourhood, too little to
tell sky from grass; the residual blocks therefore dilate (1, 2, 4, 8, repeating),
which gives 4 blocks a receptive field of about 95 px at full resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from colorstudy.models.blocks import Generator, conv_bn_relu, init_pix2pix, require_positive


class ResidualBlock(nn.Module):
    """Three 3x3 conv-BN layers with an identity skip around them."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels, dilation=dilation),
            conv_bn_relu(channels, channels, dilation=dilation),
            conv_bn_relu(channels, channels, dilation=dilation, relu=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class DeepCNN(Generator):
    """Stem conv, ``blocks`` residual blocks of 3 convs at ``width`` channels, ab head; stride 1."""

    def __init__(self, width: int = 64, weights: str = "random", blocks: int = 4) -> None:
        require_positive("deep_cnn", width=width, blocks=blocks)
        super().__init__(stride=1, weights=weights)
        self.stem = conv_bn_relu(1, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, dilation=2 ** (i % 4)) for i in range(blocks)))
        self.head = nn.Conv2d(width, 2, 3, padding=1)
        init_pix2pix(self)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(L)))
