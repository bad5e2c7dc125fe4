"""Any timm model as a backbone (``timm:<name>``), when the optional ``timm`` package is installed.

Uses timm's ``features_only`` mode and keeps the last feature map. Never required: without timm,
asking for a ``timm:`` backbone raises a :class:`~wsss.errors.ConfigError` saying how to install it.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.models.backbones.base import Backbone, InputNorm


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


class TimmBackbone(Backbone):
    """Last feature map of ``timm.create_model(name, features_only=True, output_stride=...)``.
    Pretrained weights come from a file (``load_pretrained``); nothing is downloaded."""

    def __init__(self, model_name: str, output_stride: int = 32, **kwargs):
        super().__init__()
        if not timm_available():
            raise ConfigError(f"backbone 'timm:{model_name}' needs the optional package timm "
                              f"(pip install 'wsss[timm]')")
        import timm

        kwargs.setdefault("pretrained", False)
        try:
            self.model = timm.create_model(model_name, features_only=True, output_stride=output_stride,
                                           out_indices=(-1,), **kwargs)
        except Exception as exc:  # timm raises RuntimeError/ValueError/KeyError for unknown names
            raise ConfigError(f"timm cannot build '{model_name}' with output_stride={output_stride}: {exc}") from None
        info = self.model.feature_info
        self.out_channels = int(info.channels()[-1])
        self.output_stride = int(info.reduction()[-1])
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        if "mean" in cfg and "std" in cfg:
            self.input_norm = InputNorm(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
        self.pretrained_prefixes = ("module.",)

    def convert_state_dict(self, state_dict):
        state = super().convert_state_dict(state_dict)
        own = set(self.state_dict())
        # Plain timm checkpoints lack the "model." prefix of this wrapper.
        return {(k if k in own else f"model.{k}"): v for k, v in state.items()}

    def stages(self) -> list[list[nn.Module]]:
        return [[m] for m in self.model.children()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]
