"""ResNet-38 ("wide ResNet model A1", Wu et al.) as used by PSA, IRN's predecessors and EPS.

Pre-activation residual blocks, output stride 8, 4096-d output after a final BN + ReLU.
Layer names follow the PSA port (``conv1a``, ``b2``, ``b2_1``, ..., ``b7``, ``bn7``; inside a block
``bn_branch2a``, ``conv_branch2a``, ``bn_branch2b1``, ``conv_branch2b1``, ``conv_branch1``, ...),
so converted state dicts and the original MXNet file
``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` load directly.

Stages (input stride -> output stride, channels):
conv1a 3x3 64 | b2 128 /2 (3 blocks) | b3 256 /2 (3) | b4 512 /2 (6) | b5 1024, dilation 2 (3) |
b6 bottleneck 2048, dilation 4, dropout 0.3 | b7 bottleneck 4096, dilation 4, dropout 0.5 |
bn7 + ReLU.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbones.base import Backbone, InputNorm, check_output_stride
from wsss.models.mxnet_params import convert_resnet38_mxnet


class ResBlock38(nn.Module):
    """Pre-activation block with two 3x3 convs (``in -> mid -> out``).

    The shortcut is the raw input when shapes agree, otherwise a 1x1 conv (``conv_branch1``)
    applied to BN-ReLU(input). The first conv may use a different dilation than the second
    (``first_dilation``), as in b5.
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1,
                 first_dilation: int | None = None, dilation: int = 1):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first_dilation,
                                       dilation=first_dilation, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (block output, BN-ReLU of the block input)."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        h = self.conv_branch2a(pre)
        h = F.relu(self.bn_branch2b1(h))
        h = self.conv_branch2b1(h)
        return shortcut + h, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class BottleneckBlock38(nn.Module):
    """Pre-activation bottleneck ``in -> out/4 (1x1) -> out/2 (3x3) -> out (1x1)`` with channel
    dropout before the 3x3 and the last 1x1 conv; the shortcut is always a 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation,
                                        bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(pre)
        h = self.conv_branch2a(pre)
        h = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(h))))
        h = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(h))))
        return shortcut + h, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class ResNet38(Backbone):
    """ResNet-38 backbone, output stride 8, 4096 output channels.

    ``forward`` returns ReLU(bn7(b7(...))) of shape (B, 4096, ceil(H/8), ceil(W/8)).
    ``forward_features`` also returns PSA's ``conv4`` (BN-ReLU input of b5, 512 ch) and ``conv5``
    (BN-ReLU input of b6, 1024 ch). Stages for ``frozen_stages``: conv1a, b2*, b3*, b4*, b5*, b6,
    b7 + bn7 (EPS freezes 2: conv1a and b2, b2_1, b2_2).
    Loads the MXNet ``.params`` file (converted on the fly) or a converted torch state dict.
    """

    out_channels = 4096
    output_stride = 8
    input_norm = InputNorm()
    pretrained_ignore = (r"^linear1000\.",)

    def __init__(self, output_stride: int = 8):
        super().__init__()
        check_output_stride("resnet38", output_stride, (8,))
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)

        self.b2 = ResBlock38(64, 128, 128, stride=2)
        self.b2_1 = ResBlock38(128, 128, 128)
        self.b2_2 = ResBlock38(128, 128, 128)

        self.b3 = ResBlock38(128, 256, 256, stride=2)
        self.b3_1 = ResBlock38(256, 256, 256)
        self.b3_2 = ResBlock38(256, 256, 256)

        self.b4 = ResBlock38(256, 512, 512, stride=2)
        self.b4_1 = ResBlock38(512, 512, 512)
        self.b4_2 = ResBlock38(512, 512, 512)
        self.b4_3 = ResBlock38(512, 512, 512)
        self.b4_4 = ResBlock38(512, 512, 512)
        self.b4_5 = ResBlock38(512, 512, 512)

        self.b5 = ResBlock38(512, 512, 1024, stride=1, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock38(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock38(1024, 512, 1024, dilation=2)

        self.b6 = BottleneckBlock38(1024, 2048, stride=1, dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock38(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

    def stages(self) -> list[list[nn.Module]]:
        return [[self.conv1a], [self.b2, self.b2_1, self.b2_2], [self.b3, self.b3_1, self.b3_2],
                [self.b4, self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5],
                [self.b5, self.b5_1, self.b5_2], [self.b6], [self.b7, self.bn7]]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``{"conv4": (B,512,h,w), "conv5": (B,1024,h,w), "conv6": (B,4096,h,w)}``."""
        x = self.conv1a(x)
        for block in (self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2,
                      self.b4, self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5):
            x = block(x)
        x, conv4 = self.b5.forward_with_preact(x)
        x = self.b5_2(self.b5_1(x))
        x, conv5 = self.b6.forward_with_preact(x)
        x = self.b7(x)
        return {"conv4": conv4, "conv5": conv5, "conv6": F.relu(self.bn7(x))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["conv6"]

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = list(state_dict)
        if keys and all(k.startswith(("arg:", "aux:")) for k in keys):
            return convert_resnet38_mxnet(state_dict)
        return super().convert_state_dict(state_dict)
