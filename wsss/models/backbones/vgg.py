"""VGG-16 "D1" as OAA/NSROM use it, with torchvision's parameter names (``features.N``).

Configuration D (13 3x3 convs with bias, ReLU after each) with pool1-3 as 2x2/2 max pools,
pool4 replaced by a 3x3 max pool with stride 1 and padding 1, no pool5, and conv5_1..conv5_3
dilated by 2 (padding 2). Output stride 8, 512 channels (after conv5_3's ReLU).
The conv layers sit at the same ``features`` indices as in torchvision's VGG-16 (0, 2, 5, ..., 28),
so ``vgg16-397923af.pth`` loads; its ``classifier.*`` (fc6-fc8) is ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from wsss.models.backbones.base import Backbone, check_output_stride

# ("C", out_channels, dilation) | ("M",) 2x2/2 pool | ("N",) 3x3/1 pad-1 pool
_D1 = [("C", 64, 1), ("C", 64, 1), ("M",), ("C", 128, 1), ("C", 128, 1), ("M",),
       ("C", 256, 1), ("C", 256, 1), ("C", 256, 1), ("M",),
       ("C", 512, 1), ("C", 512, 1), ("C", 512, 1), ("N",),
       ("C", 512, 2), ("C", 512, 2), ("C", 512, 2)]


class VGG16D1(Backbone):
    """``forward``: (B, 3, H, W) -> (B, 512, H/8, W/8) (floor through the 2x2 pools).
    Stages for ``frozen_stages``: conv1_x, conv2_x, conv3_x, conv4_x, conv5_x (each with its pool)."""

    out_channels = 512
    output_stride = 8
    pretrained_ignore = (r"^classifier\.",)

    def __init__(self, output_stride: int = 8):
        super().__init__()
        check_output_stride("vgg16_d1", output_stride, (8,))
        layers: list[nn.Module] = []
        in_ch = 3
        self._stage_ends: list[int] = []
        for spec in _D1:
            if spec[0] == "M":
                layers.append(nn.MaxPool2d(2, 2))
                self._stage_ends.append(len(layers))
            elif spec[0] == "N":
                layers.append(nn.MaxPool2d(3, 1, 1))
                self._stage_ends.append(len(layers))
            else:
                _, out_ch, dilation = spec
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
                in_ch = out_ch
        self._stage_ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def stages(self) -> list[list[nn.Module]]:
        starts = [0] + self._stage_ends[:-1]
        return [list(self.features[a:b]) for a, b in zip(starts, self._stage_ends)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
