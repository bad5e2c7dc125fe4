"""Classifier heads. Every head maps backbone features (B, D, h, w) to
``(logits, maps)``: ``logits`` (B, C) class scores (``None`` for the IAM head) and ``maps``
(B, K, h, w) raw (pre-ReLU) class activation maps at feature resolution.

- :class:`CAMHead` — plain CAM baseline of PSA/EPS: channel dropout, 1x1 conv to C (no bias by
  default, Xavier-uniform); logits = GAP(maps). CAM = ReLU(maps) at inference.
- :class:`EPSHead` — 1x1 conv to C+1 (no bias, Xavier-uniform); maps (B, C+1, h, w) with the
  background map LAST (index C); logits = GAP of the first C maps.
- :class:`NSROMHead` — three 3x3 convs (512, ReLU between, none after the last), GloRe, ReLU,
  1x1 conv to C with bias; logits = GAP(maps).
- :class:`IAMHead` — OAA's integral attention model: 3x3 convs each followed by ReLU, then a bare
  1x1 conv to C; pixel-wise maps, no logits.

Logits are computed as GAP(conv(features)); for a 1x1 conv (with or without bias) this equals
conv(GAP(features)), the order PSA's code uses.
"""

from __future__ import annotations

import torch
from torch import nn

from wsss.models.glore import GloRe

HeadOutput = tuple[torch.Tensor | None, torch.Tensor]


def _gap(maps: torch.Tensor) -> torch.Tensor:
    return maps.mean(dim=(2, 3))


def _init_normal(module: nn.Module, std: float = 0.01) -> None:
    """OAA/NSROM's init of new convs: weights N(0, std), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CAMHead(nn.Module):
    """Plain CAM head: ``maps = conv1x1(dropout(x))`` (B, C, h, w), ``logits = GAP(maps)``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5, bias: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1, bias=bias)
        nn.init.xavier_uniform_(self.classifier.weight)
        if bias:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        maps = self.classifier(self.dropout(x))
        return _gap(maps), maps


class EPSHead(nn.Module):
    """EPS head: ``maps = conv1x1(x)`` (B, C+1, h, w), background = channel C (last);
    ``logits`` (B, C) = GAP of the C foreground maps. Optional channel dropout (default off)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.background_index = num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(in_channels, num_classes + 1, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        maps = self.classifier(self.dropout(x))
        return _gap(maps[:, :self.num_classes]), maps


def _conv3x3_stack(in_channels: int, mid_channels: int, count: int, relu_after_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(count):
        layers.append(nn.Conv2d(in_channels if i == 0 else mid_channels, mid_channels, 3, padding=1))
        if i < count - 1 or relu_after_last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class NSROMHead(nn.Module):
    """NSROM classifier head: ``extra_convs`` (3x3 convs, ReLU between) -> ``glore`` -> ReLU ->
    ``classifier`` (1x1 conv to C with bias). ``maps`` (B, C, h, w), ``logits = GAP(maps)``.
    ``use_glore=False`` gives the OAA baseline head for ablations."""

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 512, num_convs: int = 3,
                 use_glore: bool = True, glore_state: int = 128, glore_nodes: int = 64):
        super().__init__()
        self.num_classes = num_classes
        self.extra_convs = _conv3x3_stack(in_channels, mid_channels, num_convs, relu_after_last=False)
        self.glore = GloRe(mid_channels, glore_state, glore_nodes) if use_glore else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1, bias=True)
        _init_normal(self.extra_convs)
        _init_normal(self.classifier)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        maps = self.classifier(self.relu(self.glore(self.extra_convs(x))))
        return _gap(maps), maps


class IAMHead(nn.Module):
    """Integral attention head: ``num_convs`` 3x3 convs each followed by ReLU (``num_convs=0``:
    a single ReLU), then a bare 1x1 conv to C (with bias). Returns ``(None, maps)``."""

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 512, num_convs: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.extra_convs = (_conv3x3_stack(in_channels, mid_channels, num_convs, relu_after_last=True)
                            if num_convs else nn.ReLU())
        self.classifier = nn.Conv2d(mid_channels if num_convs else in_channels, num_classes, 1, bias=True)
        _init_normal(self.extra_convs)
        _init_normal(self.classifier)

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return None, self.classifier(self.extra_convs(x))


HEADS = {"cam": CAMHead, "eps": EPSHead, "nsrom": NSROMHead, "iam": IAMHead}


def create_head(name: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a head by name (``cam``, ``eps``, ``nsrom``, ``iam``)."""
    from wsss.errors import ConfigError

    if name not in HEADS:
        raise ConfigError(f"unknown head '{name}'; choose from {', '.join(HEADS)}")
    return HEADS[name](in_channels, num_classes, **kwargs)
