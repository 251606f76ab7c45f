"""``densenet``: an encoder of dense blocks with an upsampling decoder.

From the "six architectures" source study. Each dense block (DenseNet-BC layers)
feeds every layer the concatenation of all earlier outputs, so features are reused
rather than relearned; transition layers (1x1 conv halving the channels, 2x2
average pool) sit between blocks. The decoder upsamples back, concatenating each
block's output at its resolution, so the fine structure of L reaches the output.
"""

from __future__ import annotations

import torch
from torch import nn

from colorstudy.models.blocks import Generator, UpBlock, conv_bn_relu, init_pix2pix, require_positive

BOTTLENECK = 4  # DenseNet-BC: each layer's 1x1 conv widens to 4 x growth before its 3x3 conv


def bn_relu_conv(cin: int, cout: int, kernel: int) -> nn.Sequential:
    """DenseNet's pre-activation order: the concatenated input is normalized as a whole."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False))


class DenseBlock(nn.Module):
    def __init__(self, cin: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(bn_relu_conv(cin + i * growth, BOTTLENECK * growth, 1),
                          bn_relu_conv(BOTTLENECK * growth, growth, 3))
            for i in range(layers))
        self.out_channels = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


def transition(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(bn_relu_conv(cin, cout, 1), nn.AvgPool2d(2))


class DenseNet(Generator):
    """Full-resolution stem conv (``width`` channels), then ``blocks`` times: transition
    down, dense block of ``layers`` layers with growth rate ``growth`` (default
    ``width // 2``, DenseNet-121's 32 at width 64); stride ``2**blocks``. The decoder
    mirrors it with one upsampling block per level, as wide as the skip it takes."""

    def __init__(self, width: int = 64, weights: str = "random", blocks: int = 4, layers: int = 4,
                 growth: int | None = None) -> None:
        growth = max(1, width // 2) if growth is None else growth
        require_positive("densenet", width=width, blocks=blocks, layers=layers, growth=growth)
        super().__init__(stride=2 ** blocks, weights=weights)
        self.stem = conv_bn_relu(1, width)
        skip_channels = [width]
        down: list[nn.Module] = []
        channels = width
        for i in range(blocks):
            # the stem's few channels are not compressed; every dense block's output is halved
            reduced = channels if i == 0 else channels // 2
            block = DenseBlock(reduced, layers, growth)
            down.append(nn.Sequential(transition(channels, reduced), block))
            channels = block.out_channels
            skip_channels.append(channels)
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(
            UpBlock(skip_channels[i + 1], skip_channels[i], skip_channels[i]) for i in range(blocks))
        self.head = nn.Conv2d(width, 2, 3, padding=1)
        init_pix2pix(self)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(L)]
        for level in self.down:
            skips.append(level(skips[-1]))
        x = skips.pop()
        for i in reversed(range(len(self.up))):
            x = self.up[i](x, skips[i])
        return self.head(x)
