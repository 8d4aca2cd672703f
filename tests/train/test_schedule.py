"""`scale_schedule`: a shorter run keeps the schedule's shape (steps, warm-ups); `linear_warmup`."""

from __future__ import annotations

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
    assert scaled.teacher.ema_momentum == cfg.teacher.ema_momentum  # measured to be better left alone
    assert scaled.solver.lr == cfg.solver.lr and scaled.model == cfg.model  # nothing else changes
    tiny = scale_schedule(cfg, 3)
    assert tiny.solver.max_iter == 3 and tiny.solver.steps == (2,)  # 1500 and 1800 both round to 2
    assert tiny.solver.warmup_iters == 0



def test_linear_warmup_ramp() -> None:
    assert linear_warmup(5000, 10000) == 0.5
    assert linear_warmup(0, 10000) == 0.0 and linear_warmup(20000, 10000) == 1.0 and linear_warmup(-5, 10) == 0.0
    assert linear_warmup(3, 0) == 1.0  # warm-up off
