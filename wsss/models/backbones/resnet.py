"""ResNet-50/101 with torchvision's parameter names (``conv1``, ``bn1``, ``layer1..4``,
``layerN.i.conv1..3/bn1..3/downsample.0/1``), so a user's torchvision ``.pth`` loads.

Output stride 32 (plain), 16 (layer4 dilated by 2) or 8 (layer3 by 2, layer4 by 4). As in
torchvision's ``replace_stride_with_dilation``, the first block of a dilated layer keeps the
previous dilation in its 3x3 conv and the later blocks use the new one. The stride sits in the
3x3 conv (the "v1.5" variant torchvision ships).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbones.base import Backbone, check_output_stride

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(h + shortcut)


class ResNet(Backbone):
    """Torchvision-named ResNet backbone. ``forward``: (B, 3, H, W) -> (B, 2048, H/os, W/os)
    (ceil-rounded through the strided convs). Stages for ``frozen_stages``: stem (conv1, bn1),
    layer1, layer2, layer3, layer4."""

    out_channels = 2048
    pretrained_ignore = (r"^fc\.",)

    def __init__(self, depth: int = 101, output_stride: int = 8):
        super().__init__()
        check_output_stride(f"resnet{depth}", output_stride, (8, 16, 32))
        self.output_stride = output_stride
        dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[output_stride]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._in_ch, self._dilation = 64, 1
        blocks = DEPTHS[depth]
        self.layer1 = self._make_layer(64, blocks[0], 1, False)
        self.layer2 = self._make_layer(128, blocks[1], 2, dilate[0])
        self.layer3 = self._make_layer(256, blocks[2], 2, dilate[1])
        self.layer4 = self._make_layer(512, blocks[3], 2, dilate[2])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out_ch = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._in_ch != out_ch:
            downsample = nn.Sequential(nn.Conv2d(self._in_ch, out_ch, 1, stride, bias=False),
                                       nn.BatchNorm2d(out_ch))
        layers = [Bottleneck(self._in_ch, planes, stride, previous_dilation, downsample)]
        self._in_ch = out_ch
        layers += [Bottleneck(out_ch, planes, 1, self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stages(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
