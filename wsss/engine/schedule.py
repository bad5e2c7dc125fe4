"""Learning-rate schedules as pure functions of the iteration or the epoch (so resume is exact).

Parameter groups carry their own multiplier in ``group["lr_mult"]`` (e.g. 1, 2, 10, 20 for
backbone weights, backbone biases, new-layer weights, new-layer biases); a schedule sets
``group["lr"] = base_lr * lr_mult * factor`` on every group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch


def poly_factor(iteration: int, max_iters: int, power: float = 0.9) -> float:
    """``(1 - iteration / max_iters) ** power``, for ``iteration`` clamped to ``[0, max_iters]``."""
    if max_iters <= 0:
        raise ValueError(f"max_iters must be positive, got {max_iters}")
    progress = min(max(iteration, 0), max_iters) / max_iters
    return (1.0 - progress) ** power


def step_factor(epoch: int, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """``gamma ** k`` where ``k`` is the number of milestones ``<= epoch`` (epochs counted from 0).

    NSROM's ``×0.1 at epochs 5 and 10`` is ``milestones=(5, 10)``: epochs 0–4 run at the base rate,
    5–9 at 0.1×, 10 and later at 0.01× (the ``MultiStepLR`` rule).
    """
    passed = sum(1 for m in milestones if epoch >= m)
    return gamma ** passed


def param_group(params: Iterable[torch.nn.Parameter], lr_mult: float = 1.0,
                weight_decay: float | None = None, name: str = "") -> dict:
    """An optimiser parameter group with its lr multiplier (and its own weight decay if given)."""
    group: dict = {"params": [p for p in params if p.requires_grad], "lr_mult": float(lr_mult)}
    if weight_decay is not None:
        group["weight_decay"] = float(weight_decay)
    if name:
        group["name"] = name
    return group


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float = 1.0) -> float:
    """Set every group's lr to ``base_lr * group['lr_mult'] * factor``; returns ``base_lr * factor``.

    A group without ``lr_mult`` is treated as 1 and gets ``lr_mult = 1.0`` stored.
    """
    for group in optimizer.param_groups:
        mult = group.setdefault("lr_mult", 1.0)
        group["lr"] = base_lr * mult * factor
    return base_lr * factor


@dataclass(frozen=True)
class PolySchedule:
    """Poly decay ``base_lr * (1 - it / max_iters) ** power`` (EPS, DeepLab)."""

    base_lr: float
    max_iters: int
    power: float = 0.9

    def lr_at(self, iteration: int) -> float:
        return self.base_lr * poly_factor(iteration, self.max_iters, self.power)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set the groups' lr for ``iteration`` (0-based, before its step); returns the base lr."""
        return set_lr(optimizer, self.base_lr, poly_factor(iteration, self.max_iters, self.power))


@dataclass(frozen=True)
class StepSchedule:
    """Step decay ``base_lr * gamma ** (#milestones <= epoch)`` (NSROM: milestones 5 and 10)."""

    base_lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * step_factor(epoch, self.milestones, self.gamma)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Set the groups' lr for ``epoch`` (0-based); returns the base lr."""
        return set_lr(optimizer, self.base_lr, step_factor(epoch, self.milestones, self.gamma))
