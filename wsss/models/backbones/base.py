"""What every backbone provides: output channels and stride, input normalisation, stages to
freeze, and loading of pretrained weights with the key names of the files users have."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.models.param_groups import freeze_bn, freeze_modules
from wsss.models.weights import LoadReport, load_state_dict_checked, read_weight_file, strip_prefixes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputNorm:
    """How the pretrained weights expect images: ``x' = (x * max_value - mean) / std`` per channel,
    for ``x`` in [0, 1], channels in RGB order unless ``bgr``.

    Caffe-style weights use ``max_value=255`` (pixels in 0..255), ``std=(1, 1, 1)`` and BGR order.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False
    max_value: float = 1.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: (B, 3, H, W) RGB float in [0, 1]. Returns the normalised network input."""
        x = images.flip(1) if self.bgr else images
        x = x * self.max_value
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class Backbone(nn.Module):
    """Base class. Subclasses set ``out_channels`` and ``output_stride`` and implement
    ``forward(x: (B, 3, H, W)) -> (B, out_channels, ceil(H / output_stride), ceil(W / output_stride))``
    (exact sizes depend on each network's padding).

    Class attributes describing pretrained files:
    ``pretrained_ignore``: regexes of file keys dropped on purpose (e.g. the ImageNet classifier);
    ``pretrained_prefixes``: wrapper prefixes stripped from file keys.
    """

    out_channels: int
    output_stride: int
    input_norm: InputNorm = InputNorm()
    pretrained_ignore: tuple[str, ...] = ()
    pretrained_prefixes: tuple[str, ...] = ("module.",)

    def stages(self) -> list[list[nn.Module]]:
        """The network's stages in input-to-output order, for ``frozen_stages``."""
        raise NotImplementedError

    def freeze_stages(self, count: int) -> None:
        """Freeze the first ``count`` stages (no gradients, their BatchNorm frozen)."""
        stages = self.stages()
        if not 0 <= count <= len(stages):
            raise ConfigError(f"frozen_stages={count} is out of range for {type(self).__name__} "
                              f"(it has {len(stages)} stages)")
        for stage in stages[:count]:
            freeze_modules(stage)

    def freeze_bn(self) -> None:
        freeze_bn(self)

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename the keys of a file into this module's names (default: strip wrapper prefixes)."""
        return strip_prefixes(state_dict, self.pretrained_prefixes)

    def load_pretrained(self, weights: str | os.PathLike | Mapping[str, torch.Tensor], *,
                        strict: bool = False) -> LoadReport:
        """Load a weight file (or an already read state dict) into this backbone.
        Returns the :class:`LoadReport`; shape mismatches raise ``DataError``."""
        source = ""
        if not isinstance(weights, Mapping):
            source = str(weights)
            weights = read_weight_file(weights)
        state = self.convert_state_dict(weights)
        return load_state_dict_checked(self, state, strict=strict, ignore=self.pretrained_ignore,
                                       source=source)


def check_output_stride(name: str, output_stride: int, supported: tuple[int, ...]) -> None:
    if output_stride not in supported:
        raise ConfigError(f"{name}: output_stride={output_stride} is not supported; "
                          f"choose one of {', '.join(map(str, supported))}")
