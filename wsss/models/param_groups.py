"""Frozen BatchNorm, frozen stages and optimizer parameter groups.

``freeze_bn(model)`` turns every BatchNorm layer into a frozen one: it stays in eval mode (running
statistics are used and never updated) even after ``model.train()``, and its affine parameters get
``requires_grad=False``. The layer keeps its class's state-dict layout (it becomes a subclass of its
own BatchNorm class), so checkpoints are unchanged.

``param_groups(model, lr, weight_decay)`` splits the trainable parameters into backbone vs new
layers and weights vs biases, the way PSA/EPS, OAA/NSROM and DeepLab set their learning rates:
backbone weights ``lr``, backbone biases ``2·lr``, new weights ``10·lr``, new biases ``20·lr``
(biases without weight decay). Frozen parameters are left out.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn


class _StaysInEval:
    """Mixin: ``train()`` leaves this BatchNorm in eval mode."""

    frozen = True

    def train(self, mode: bool = True):  # noqa: D401 - nn.Module API
        return super().train(False)


class FrozenBatchNorm1d(_StaysInEval, nn.BatchNorm1d):
    pass


class FrozenBatchNorm2d(_StaysInEval, nn.BatchNorm2d):
    pass


class FrozenBatchNorm3d(_StaysInEval, nn.BatchNorm3d):
    pass


class FrozenSyncBatchNorm(_StaysInEval, nn.SyncBatchNorm):
    pass


_FROZEN = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d,
           nn.BatchNorm3d: FrozenBatchNorm3d, nn.SyncBatchNorm: FrozenSyncBatchNorm}
_UNFROZEN = {v: k for k, v in _FROZEN.items()}


def is_frozen_bn(module: nn.Module) -> bool:
    return isinstance(module, _StaysInEval)


def freeze_bn(model: nn.Module) -> int:
    """Freeze every BatchNorm in ``model`` (eval mode for good, no gradient on gamma/beta).
    Returns the number of layers frozen. Other norm layers are left alone."""
    count = 0
    for module in model.modules():
        frozen_cls = _FROZEN.get(type(module))
        if frozen_cls is None:
            if is_frozen_bn(module):
                count += 1
            continue
        module.__class__ = frozen_cls
        module.eval()
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
        count += 1
    return count


def unfreeze_bn(model: nn.Module) -> None:
    """Undo :func:`freeze_bn`: the layers follow ``train()``/``eval()`` and train gamma/beta again."""
    for module in model.modules():
        plain = _UNFROZEN.get(type(module))
        if plain is not None:
            module.__class__ = plain
            module.train(model.training)
            for p in module.parameters(recurse=False):
                p.requires_grad_(True)


def freeze_modules(modules: Iterable[nn.Module]) -> None:
    """Stop gradients for every parameter of ``modules`` (their BatchNorm layers are frozen too)."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
        freeze_bn(module)


def find_backbone(model: nn.Module) -> nn.Module | None:
    """The module holding the pretrained backbone: ``model.backbone`` or the first submodule
    named ``...backbone``; ``None`` when there is none."""
    if isinstance(getattr(model, "backbone", None), nn.Module):
        return model.backbone
    for name, module in model.named_modules():
        if name.split(".")[-1] == "backbone":
            return module
    return None


def param_groups(model: nn.Module, lr: float, weight_decay: float, *,
                 backbone: nn.Module | None = None,
                 backbone_mult: tuple[float, float] = (1.0, 2.0),
                 new_mult: tuple[float, float] = (10.0, 20.0),
                 bias_weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups. Returns up to four dicts ``{"name", "params", "lr",
    "weight_decay"}`` named ``backbone_weight``, ``backbone_bias``, ``new_weight``, ``new_bias``
    (empty groups are omitted).

    ``backbone``: the pretrained part (default :func:`find_backbone`); every other parameter is a
    new layer. ``*_mult``: lr multipliers for (weights, biases). A parameter is a bias when its
    name ends in ``bias``; biases get ``bias_weight_decay`` (0 as in PSA/EPS and DeepLab).
    Parameters with ``requires_grad=False`` (frozen BatchNorm, frozen stages) are left out.
    """
    backbone = find_backbone(model) if backbone is None else backbone
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups: dict[str, list] = {"backbone_weight": [], "backbone_bias": [], "new_weight": [], "new_bias": []}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        part = "backbone" if id(p) in backbone_ids else "new"
        kind = "bias" if name.endswith("bias") else "weight"
        groups[f"{part}_{kind}"].append(p)
    settings = {
        "backbone_weight": (lr * backbone_mult[0], weight_decay),
        "backbone_bias": (lr * backbone_mult[1], bias_weight_decay),
        "new_weight": (lr * new_mult[0], weight_decay),
        "new_bias": (lr * new_mult[1], bias_weight_decay),
    }
    return [{"name": name, "params": params, "lr": settings[name][0], "weight_decay": settings[name][1]}
            for name, params in groups.items() if params]
