"""Learning-rate schedules against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from wsss.engine.schedule import (PolySchedule, StepSchedule, param_group, poly_factor, set_lr,
                                  step_factor)


def _optimizer(mults):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in mults]
    groups = [param_group([p], m) for p, m in zip(params, mults)]
    return torch.optim.SGD(groups, lr=123.0, momentum=0.9)


def test_poly_factor_hand_values():
    # 0.5 ** 0.9 = exp(0.9 * ln 0.5) = 0.535886731...
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5358867313, abs=1e-10)
    assert poly_factor(0, 100) == 1.0
    assert poly_factor(100, 100) == 0.0
    assert poly_factor(150, 100) == 0.0  # clamped
    assert poly_factor(75, 100, 1.0) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        poly_factor(0, 0)


def test_poly_schedule_sets_each_group_with_its_multiplier():
    opt = _optimizer([1, 2, 10, 20])
    sched = PolySchedule(base_lr=0.01, max_iters=100, power=0.9)
    base = sched.apply(opt, 50)
    assert base == pytest.approx(0.005358867313, abs=1e-12)
    expected = [0.0053588673127, 0.0107177346254, 0.053588673127, 0.107177346254]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected, abs=1e-11)
    # a pure function of the iteration: going back gives the earlier value again (exact resume)
    sched.apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.02, 0.1, 0.2])
    assert sched.lr_at(99) == pytest.approx(0.01 * 0.01 ** 0.9)


def test_step_decay_nsrom_milestones():
    assert [step_factor(e, (5, 10)) for e in (0, 4, 5, 9, 10, 14)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    opt = _optimizer([1, 2, 10, 20])  # NSROM: 1e-3, 2e-3, 1e-2, 2e-2
    sched = StepSchedule(base_lr=1e-3, milestones=(5, 10))
    sched.apply(opt, 7)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 2e-4, 1e-3, 2e-3], rel=1e-12)
    assert sched.lr_at(12) == pytest.approx(1e-5)
    assert step_factor(3, (1, 2), gamma=0.5) == 0.25


def test_set_lr_on_groups_without_multiplier_treats_them_as_one():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert set_lr(opt, 0.2, 0.5) == pytest.approx(0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[0]["lr_mult"] == 1.0


def test_param_group_skips_frozen_parameters():
    trainable = torch.nn.Parameter(torch.zeros(1))
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    group = param_group([trainable, frozen], lr_mult=10, weight_decay=0.0, name="head")
    assert group["params"] == [trainable]
    assert group["lr_mult"] == 10.0 and group["weight_decay"] == 0.0 and group["name"] == "head"
