"""Trained-model files shared by the stages: ``final.pt`` = weights + what is needed to rebuild.

A file holds ``{"model": state_dict, "meta": {...}}`` and loads with ``weights_only=True``.
Classifier meta: ``kind="classifier"``, ``method``, ``backbone``, ``output_stride``, ``head``,
``num_classes``, ``mean``, ``std``, ``input_size`` (NSROM square size or 0).
Segmenter meta: ``kind="segmenter"``, ``backbone``, ``output_stride``, ``num_classes`` (C+1),
``rates``, ``msc_scales``, ``mean``, ``std``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.engine.checkpoint import load_checkpoint, save_checkpoint
from wsss.errors import WsssError
from wsss.models import build_classifier, build_deeplab_v2

HEAD_OF_METHOD = {"cam": "cam", "eps": "eps", "nsrom": "nsrom", "iam": "iam"}


def save_trained(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights (``module.`` prefixes removed) and meta atomically."""
    model = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"model": state, "meta": dict(meta)})


def _read(path: str | Path, kind: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise WsssError(f"trained {kind} missing: expected {path} (run the stage that trains it first)")
    state = load_checkpoint(path)
    meta = state.get("meta", {})
    if meta.get("kind") != kind:
        raise WsssError(f"{path} holds a {meta.get('kind', 'unknown')} model, not a {kind}")
    return state


def build_classifier_from_meta(meta: dict[str, Any]) -> nn.Module:
    """An untrained classifier of the architecture ``meta`` describes (no pretrained load)."""
    return build_classifier(meta["backbone"], meta["head"], int(meta["num_classes"]),
                            output_stride=int(meta["output_stride"]))


def load_trained_classifier(path: str | Path, device: str | torch.device = "cpu"
                            ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a classifier from ``final.pt``; returns ``(model in eval mode, meta)``."""
    state = _read(path, "classifier")
    model = build_classifier_from_meta(state["meta"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state["meta"]


def load_trained_segmenter(path: str | Path, device: str | torch.device = "cpu"
                           ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a DeepLab-v2 (with its multi-scale wrapper) from ``final.pt``."""
    state = _read(path, "segmenter")
    meta = state["meta"]
    model = build_deeplab_v2(meta["backbone"], int(meta["num_classes"]),
                             output_stride=int(meta["output_stride"]), rates=tuple(meta["rates"]),
                             scales=tuple(meta["msc_scales"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), meta
