"""The Caffe (MSRA) ResNet-101 of DeepLab-v2, with the key names of the widely used
deeplab-pytorch conversion, so ``deeplabv1_resnet101-coco.pth``-style files load.

Names: ``layer1.conv1.{conv,bn}`` (7x7 stem) + ``layer1.pool`` (3x3/2 max pool, ceil mode);
``layer2..layer5.block<i>.{reduce,conv3x3,increase,shortcut}.{conv,bn}``. Differences from
torchvision's ResNet: the stride sits in the first 1x1 conv (``reduce``), the stem pool uses
ceil mode, and every block of a dilated layer uses the layer's dilation.
Older files name the shortcut ``proj`` and may carry ``base.``/``scale.``/``module.`` prefixes;
both are handled. The networks were trained on BGR images in 0..255 minus the Caffe mean.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbones.base import Backbone, InputNorm, check_output_stride
from wsss.models.weights import strip_prefixes

CAFFE_BGR_MEAN = (104.008, 116.669, 122.675)
EXPANSION = 4


class ConvBnReLU(nn.Sequential):
    """``conv`` (no bias) + ``bn`` (+ ReLU unless ``relu=False``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, dilation: int,
                 relu: bool = True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch, eps=1e-5))
        if relu:
            self.add_module("relu", nn.ReLU())


class CaffeBottleneck(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, downsample: bool):
        super().__init__()
        mid = out_ch // EXPANSION
        self.reduce = ConvBnReLU(in_ch, mid, 1, stride, 0, 1)
        self.conv3x3 = ConvBnReLU(mid, mid, 3, 1, dilation, dilation)
        self.increase = ConvBnReLU(mid, out_ch, 1, 1, 0, 1, relu=False)
        self.shortcut = ConvBnReLU(in_ch, out_ch, 1, stride, 0, 1, relu=False) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.increase(self.conv3x3(self.reduce(x)))
        return F.relu(h + self.shortcut(x))


class ResLayer(nn.Sequential):
    def __init__(self, blocks: int, in_ch: int, out_ch: int, stride: int, dilation: int):
        super().__init__()
        for i in range(blocks):
            self.add_module(f"block{i + 1}", CaffeBottleneck(in_ch if i == 0 else out_ch, out_ch,
                                                           stride if i == 0 else 1, dilation, i == 0))


class Stem(nn.Sequential):
    def __init__(self, out_ch: int = 64):
        super().__init__()
        self.add_module("conv1", ConvBnReLU(3, out_ch, 7, 2, 3, 1))
        self.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))


class ResNetCaffe(Backbone):
    """DeepLab's ResNet-101 (deeplab-pytorch names). ``forward``: (B, 3, H, W) ->
    (B, 2048, h, w) with output stride 8 (default, DeepLab-v2: layer4 dilation 2, layer5 dilation 4),
    16 or 32. Stages for ``frozen_stages``: layer1 (stem), layer2, ..., layer5."""

    out_channels = 2048
    input_norm = InputNorm(mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0), bgr=True, max_value=255.0)
    pretrained_ignore = (r"^fc\.", r"^aspp\.")
    pretrained_prefixes = ("module.", "base.", "scale.")

    def __init__(self, depth: int = 101, output_stride: int = 8):
        super().__init__()
        check_output_stride(f"resnet{depth}_caffe", output_stride, (8, 16, 32))
        self.output_stride = output_stride
        blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
        strides, dilations = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2)),
                              32: ((1, 2, 2, 2), (1, 1, 1, 1))}[output_stride]
        ch = [64 * 2 ** p for p in range(6)]
        self.layer1 = Stem(ch[0])
        self.layer2 = ResLayer(blocks[0], ch[0], ch[2], strides[0], dilations[0])
        self.layer3 = ResLayer(blocks[1], ch[2], ch[3], strides[1], dilations[1])
        self.layer4 = ResLayer(blocks[2], ch[3], ch[4], strides[2], dilations[2])
        self.layer5 = ResLayer(blocks[3], ch[4], ch[5], strides[3], dilations[3])

    def stages(self) -> list[list[nn.Module]]:
        return [[self.layer1], [self.layer2], [self.layer3], [self.layer4], [self.layer5]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = strip_prefixes(state_dict, self.pretrained_prefixes)
        return {k.replace(".proj.", ".shortcut."): v for k, v in state.items()}
