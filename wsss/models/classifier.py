"""``Classifier(backbone, head)``: any head on any backbone."""

from __future__ import annotations

import torch
from torch import nn

from wsss.models.heads import HeadOutput, create_head
from wsss.models.registry import create_backbone


class Classifier(nn.Module):
    """``forward``: images (B, 3, H, W), normalised as ``backbone.input_norm`` expects ->
    ``(logits (B, C) or None, maps (B, K, h, w))`` with h, w = the backbone's feature size.
    ``backbone`` holds the pretrained part (see :func:`~wsss.models.param_groups.param_groups`),
    ``head`` the new layers."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward(self, images: torch.Tensor) -> HeadOutput:
        return self.head(self.backbone(images))


def build_classifier(backbone: str, head: str, num_classes: int, *, output_stride: int | None = None,
                     pretrained: str | None = None, freeze_bn: bool = False, frozen_stages: int = 0,
                     backbone_kwargs: dict | None = None, head_kwargs: dict | None = None) -> Classifier:
    """Build ``Classifier(create_backbone(backbone, ...), create_head(head, ...))``."""
    net = create_backbone(backbone, output_stride, pretrained, freeze_bn=freeze_bn,
                          frozen_stages=frozen_stages, **(backbone_kwargs or {}))
    return Classifier(net, create_head(head, net.out_channels, num_classes, **(head_kwargs or {})))
