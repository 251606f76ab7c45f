"""``resnet_unet``: a ResNet-34 encoder with a U-Net style decoder.

From the ResNet-34 encoder-decoder study and the well-known U-Net-with-pretrained-
ResNet tutorial. The encoder is torchvision's resnet34, optionally with ImageNet
weights from the torch hub cache (``colorstudy.weights``). The encoder sees the gray
photo as ImageNet training did (``blocks.imagenet_input``: sRGB R = G = B from L,
normalized per channel) through its unchanged 3-channel first conv; the decoder's
full-resolution skip is L itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from colorstudy import weights as backbone_weights
from colorstudy.models.blocks import Generator, UpBlock, halvings, imagenet_input, init_pix2pix, require_positive

ENCODER_CHANNELS = (64, 64, 128, 256, 512)  # resnet34 stem, layer1..layer4, at stride 2, 4, ..., 32


class ResNetUNet(Generator):
    """ResNet-34 encoder stages (the first ``depth`` of stem, layer1..layer4; stride
    ``2**depth``) and a decoder of upsampling blocks, each concatenating the encoder
    feature of its resolution (the input L at full resolution). Decoder channels at
    stride ``2**i`` are ``width * 2**i / 2``; the encoder is resnet34 at any width.

    With random weights the encoder keeps torchvision's (Kaiming) init, the one a
    ResNet is designed for; the decoder gets pix2pix's.
    """

    @staticmethod
    def arguments_for(image_size: int) -> dict[str, Any]:
        return {"depth": min(5, halvings(image_size))}  # ResNet-34's five stages, fewer for small images

    def __init__(self, width: int = 64, weights: str = "random", depth: int = 5) -> None:
        require_positive("resnet_unet", width=width, depth=depth)
        if depth > len(ENCODER_CHANNELS):
            raise ValueError(f"resnet_unet: depth must be at most {len(ENCODER_CHANNELS)} "
                             f"(resnet34 has 5 stride-2 stages), got {depth}")
        # imported here: torchvision takes seconds to import, and only this architecture needs it
        from torchvision.models import resnet34

        state, provenance = backbone_weights.load_state_dict("resnet34", weights)
        super().__init__(stride=2 ** depth, weights=weights, provenance=provenance)
        resnet = resnet34(weights=None)
        if state is not None:
            resnet.load_state_dict(state)
        stages = [nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu),
                  nn.Sequential(resnet.maxpool, resnet.layer1),
                  resnet.layer2, resnet.layer3, resnet.layer4]
        self.encoder = nn.ModuleList(stages[:depth])

        encoder_channels = ENCODER_CHANNELS[:depth]
        skip_channels = (1, *encoder_channels[:-1])  # what is at each decoder block's output resolution
        decoder_channels = [max(1, width * 2 ** i // 2) for i in range(depth)]
        inputs = [*decoder_channels[1:], encoder_channels[-1]]
        self.decoder = nn.ModuleList(
            UpBlock(inputs[i], skip_channels[i], decoder_channels[i]) for i in range(depth))
        self.head = nn.Conv2d(decoder_channels[0], 2, 3, padding=1)
        init_pix2pix(self.decoder)
        init_pix2pix(self.head)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        skips = [L]
        x = imagenet_input(L)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](x, skips[i])
        return self.head(x)
