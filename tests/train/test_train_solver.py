"""SGD parameter groups and the warm-up + multi-step LR schedule."""

from __future__ import annotations

import pytest
import torch
from boxseg.train.config import ConfigError, SolverConfig
from boxseg.train.solver import build_optimizer, build_scheduler, lr_factor, validate_solver
from torch import nn


def test_lr_factor_values():
    cfg = SolverConfig(warmup_iters=10, warmup_factor=0.001, steps=(20, 30), gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.001)
    assert lr_factor(5, cfg) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(19, cfg) == 1.0
    assert lr_factor(20, cfg) == pytest.approx(0.1)
    assert lr_factor(29, cfg) == pytest.approx(0.1)
    assert lr_factor(30, cfg) == pytest.approx(0.01)


def test_scheduler_follows_lr_factor_per_iteration():
    cfg = SolverConfig(lr=0.02, warmup_iters=4, steps=(6,), gamma=0.5)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.02 * lr_factor(i, cfg) for i in range(8)])
    # Resuming (optimizer + scheduler state, as the trainer does) continues the schedule where it stopped.
    opt2 = build_optimizer(model, cfg)
    sched2 = build_scheduler(opt2, cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.02 * lr_factor(8, cfg))
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.02 * lr_factor(9, cfg))


def test_norm_parameters_get_their_own_weight_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1))
    opt = build_optimizer(model, SolverConfig(weight_decay=1e-4, weight_decay_norm=0.0, momentum=0.9))
    groups = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    norm_ids = {id(p) for p in model[1].parameters()}
    assert {id(p) for p in groups[0.0]} == norm_ids
    assert len(groups[1e-4]) == 4
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("ims_per_batch", 0), ("momentum", 1.0), ("steps", (0,))])
def test_invalid_solver_values_rejected(field, value):
    with pytest.raises(ConfigError, match=f"solver.{field}"):
        validate_solver(SolverConfig(**{field: value}))
