"""`scale_schedule`: a shorter run keeps the schedule's shape (steps, warm-ups, the EMA teacher's memory)."""

from __future__ import annotations

import pytest
from boxseg.train.config import load_config
from boxseg.train.schedule import linear_warmup, scale_schedule


def test_scale_schedule_keeps_the_schedules_shape() -> None:
    cfg = load_config("boxseg", overrides=["solver.max_iter=2000", "solver.steps=[1500,1800]",
                                           "solver.warmup_iters=100", "loss.pairwise_warmup_iters=500",
                                           "loss.mask_sup.warmup_iters=3000"])
    scaled = scale_schedule(cfg, 400)
    assert scaled.solver.max_iter == 400
    assert scaled.solver.steps == (300, 360)
    assert scaled.solver.warmup_iters == 20
    assert scaled.loss.pairwise_warmup_iters == 100
    assert scaled.loss.mask_sup.warmup_iters == 400  # 600 after scaling, capped at the run's length
    # The teacher's memory 1 / (1 - m) shrinks with the run: 1000 iterations -> 200.
    assert scaled.teacher.ema_momentum == pytest.approx(1 - (1 - cfg.teacher.ema_momentum) * 2000 / 400)
    assert scaled.solver.lr == cfg.solver.lr and scaled.model == cfg.model  # nothing else changes
    tiny = scale_schedule(cfg, 3)
    assert tiny.solver.max_iter == 3 and tiny.solver.steps == (2,)  # 1500 and 1800 both round to 2
    assert tiny.solver.warmup_iters == 0



def test_scale_schedule_keeps_a_frozen_or_copying_teacher() -> None:
    for m in (0.0, 1.0):
        cfg = load_config("boxseg", overrides=["solver.max_iter=2000", f"teacher.ema_momentum={m}"])
        assert scale_schedule(cfg, 100).teacher.ema_momentum == m
    # Very short runs never go below 0 (the teacher then copies the student).
    cfg = load_config("boxseg", overrides=["solver.max_iter=2000", "teacher.ema_momentum=0.99"])
    assert scale_schedule(cfg, 10).teacher.ema_momentum == 0.0


def test_linear_warmup_ramp() -> None:
    assert linear_warmup(5000, 10000) == 0.5
    assert linear_warmup(0, 10000) == 0.0 and linear_warmup(20000, 10000) == 1.0 and linear_warmup(-5, 10) == 0.0
    assert linear_warmup(3, 0) == 1.0  # warm-up off
