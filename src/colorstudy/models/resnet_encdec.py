"""``resnet_encdec``: the faces study's encoder-decoder (seed 003), with no skip connections.

The encoder is the first six children of torchvision's resnet34 (conv1, bn1, relu,
maxpool, layer1, layer2: stride 8, 128 channels), optionally with ImageNet weights
from the torch hub cache; the decoder is three plain x2 upsampling blocks. Unlike
``resnet_unet`` nothing but the stride-8 features reaches the decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from colorstudy import weights as backbone_weights
from colorstudy.models.blocks import Generator, UpBlock, imagenet_input, init_pix2pix, require_positive

ENCODER_CHILDREN = 6  # up to and including layer2
ENCODER_OUT = 128
STRIDE = 8


class ResNetEncoderDecoder(Generator):
    """Decoder channels ``2*width, width, width/2`` (128, 64, 32 at the published width 64),
    then a 3x3 conv to ab. With random weights the encoder keeps torchvision's init and
    the decoder gets pix2pix's."""

    def __init__(self, width: int = 64, weights: str = "random") -> None:
        require_positive("resnet_encdec", width=width)
        # imported here: torchvision takes seconds to import, and only the ResNet models need it
        from torchvision.models import resnet34

        state, provenance = backbone_weights.load_state_dict("resnet34", weights)
        super().__init__(stride=STRIDE, weights=weights, provenance=provenance)
        resnet = resnet34(weights=None)
        if state is not None:
            resnet.load_state_dict(state)
        self.encoder = nn.Sequential(*list(resnet.children())[:ENCODER_CHILDREN])
        channels = [ENCODER_OUT, 2 * width, width, max(1, width // 2)]
        self.decoder = nn.Sequential(*(UpBlock(channels[i], 0, channels[i + 1]) for i in range(3)))
        self.head = nn.Conv2d(channels[-1], 2, 3, padding=1)
        init_pix2pix(self.decoder)
        init_pix2pix(self.head)

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(imagenet_input(L))))
