"""Shorter (or longer) runs with the same schedule shape: `--iters` in `boxseg demo` and `boxseg bench ablation`."""

from __future__ import annotations

import dataclasses
from typing import Any


def linear_warmup(iteration: int, warmup_iters: int) -> float:
    """min(iteration / warmup_iters, 1): the linear ramp of a loss term (1 when the warm-up is off)."""
    if warmup_iters <= 0:
        return 1.0
    return min(max(float(iteration), 0.0) / warmup_iters, 1.0)


def scale_schedule(cfg: Any, iters: int) -> Any:
    """Set ``solver.max_iter = iters`` and scale every time constant of the schedule by the same factor:
    ``solver.steps``, every int field named ``*warmup_iters`` anywhere in the config (the LR warm-up, the loss
    warm-ups), each capped at ``iters``, and the EMA teacher's memory ``1 / (1 - teacher.ema_momentum)``.

    Why the EMA too: the teacher starts as the untrained student and still holds ``momentum ** n`` of it after n
    updates. Keeping 0.99 in a run cut to a sixth would leave a teacher mostly made of early weights when the
    mask-supervision warm-up ends."""
    ratio = iters / max(1, int(cfg.solver.max_iter))

    def scale(v: int) -> int:
        return max(0, min(iters, round(v * ratio)))

    def walk(node: Any) -> Any:
        updates = {}
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                updates[f.name] = walk(v)
            elif f.name.endswith("warmup_iters") and isinstance(v, int) and not isinstance(v, bool):
                updates[f.name] = scale(v)
        return dataclasses.replace(node, **updates)

    cfg = walk(cfg)
    steps = tuple(s for s in (scale(s) for s in cfg.solver.steps) if 0 < s < iters) or (iters,)
    warmup = min(cfg.solver.warmup_iters, max(0, iters - 1))
    cfg.solver = dataclasses.replace(cfg.solver, max_iter=iters, steps=steps, warmup_iters=warmup)
    teacher = getattr(cfg, "teacher", None)
    if teacher is not None and 0.0 < teacher.ema_momentum < 1.0:
        momentum = max(0.0, 1.0 - (1.0 - teacher.ema_momentum) / ratio)
        cfg.teacher = dataclasses.replace(teacher, ema_momentum=momentum)
    return cfg
