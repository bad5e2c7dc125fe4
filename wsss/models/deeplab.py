"""DeepLab-v2: ASPP (summed dilated 3x3 convs) on any backbone, and the multi-scale input wrapper.

Names follow deeplab-pytorch (``aspp.c0..c3``) so its checkpoints convert with
:func:`convert_deeplab_pytorch_keys`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.param_groups import freeze_bn as _freeze_bn
from wsss.models.registry import create_backbone
from wsss.models.weights import strip_prefixes


class ASPP(nn.Module):
    """Sum of 3x3 convs with dilation = padding = each rate (bias; weights N(0, 0.01), bias 0).
    (B, D, h, w) -> (B, num_classes, h, w)."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.rates = tuple(rates)
        for i, rate in enumerate(self.rates):
            conv = nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True)
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
            self.add_module(f"c{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(getattr(self, f"c{i}")(x) for i in range(len(self.rates)))


class DeepLabV2(nn.Module):
    """``backbone`` + :class:`ASPP`. ``forward``: (B, 3, H, W) -> logits (B, num_classes, h, w)
    at the backbone's output stride (not upsampled)."""

    def __init__(self, backbone: nn.Module, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, num_classes, rates)
        self.num_classes = num_classes

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(x))


class MultiScale(nn.Module):
    """Multi-scale inputs with max fusion (DeepLab-v2's MSC).

    The input is run at every scale (bilinear resize to ``int(s * H), int(s * W)``); the logits of
    the other scales are resized (bilinear) to those of the first scale and fused by an
    element-wise max. Training: returns ``[logits at each scale (own sizes)..., fused]``;
    eval: returns the fused logits (the size of the first scale's logits).
    """

    def __init__(self, base: nn.Module, scales: Sequence[float] = (1.0, 0.75, 0.5)):
        super().__init__()
        if not scales:
            raise ValueError("MultiScale needs at least one scale")
        self.base = base
        self.scales = tuple(float(s) for s in scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        h, w = x.shape[-2:]
        branches = []
        for s in self.scales:
            xs = x if s == 1.0 else F.interpolate(x, size=(int(s * h), int(s * w)), mode="bilinear",
                                                  align_corners=False)
            branches.append(self.base(xs))
        size = branches[0].shape[-2:]
        aligned = [b if b.shape[-2:] == size else F.interpolate(b, size=size, mode="bilinear", align_corners=False)
                   for b in branches]
        fused = torch.stack(aligned).amax(dim=0)
        return branches + [fused] if self.training else fused


def build_deeplab_v2(backbone: str = "resnet101_caffe", num_classes: int = 21, *,
                     output_stride: int | None = 8, pretrained: str | None = None,
                     rates: Sequence[int] = (6, 12, 18, 24), scales: Sequence[float] | None = (1.0, 0.75, 0.5),
                     freeze_bn: bool = True, **backbone_kwargs) -> nn.Module:
    """DeepLab-v2 on a registered backbone, wrapped in :class:`MultiScale` unless ``scales`` is
    ``None`` or a single 1.0. BatchNorm frozen by default (METHODS B.5)."""
    net = create_backbone(backbone, output_stride, pretrained, **backbone_kwargs)
    model: nn.Module = DeepLabV2(net, num_classes, rates)
    if freeze_bn:
        _freeze_bn(model)
    if scales and tuple(scales) != (1.0,):
        model = MultiScale(model, scales)
    return model


def convert_deeplab_pytorch_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """deeplab-pytorch checkpoint keys -> :class:`DeepLabV2` keys (unwrapped, without MultiScale):
    ``[module.][base.|scale.]layerN.* -> backbone.layerN.*``, ``aspp.cI.* -> aspp.cI.*``,
    ``proj`` -> ``shortcut``. Other keys are kept as they are."""
    out: dict[str, torch.Tensor] = {}
    for key, value in strip_prefixes(state_dict, ("module.", "base.", "scale.")).items():
        key = key.replace(".proj.", ".shortcut.")
        if key.startswith("layer"):
            key = "backbone." + key
        out[key] = value
    return out
