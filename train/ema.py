"""EMA teacher (BoxSeg Sec. 3.1, docs/method.md "EMA teacher"): phi <- m_t * phi + (1 - m_t) * theta after every
student update, with m_t = min(m, 1 - 1/(t + 1)) when the warm-up is on (t = updates so far).

The warm-up (the public BoxTeacher EMA hook does the same) makes the early teacher the running mean of the
student's iterates instead of mostly its random initialisation: with a constant m = 0.996, 38% of the teacher is
still its start at iteration 240, its box scores stay under QAM's gate and QAM yields almost no pseudo masks.

The teacher is a deep copy of the student taken at construction (an exact copy of the freshly initialised
student), its parameters never require grad, and buffers (e.g. frozen-BN statistics) are copied from the student.
A DDP-wrapped student is unwrapped through `.module`, so the same code works on one or many processes (BoxTeacher's
public EMA hook assumes the wrapper and fails on a single GPU).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class ModelEMA:
    """Exponential moving average of a student network, kept as a separate teacher module."""

    def __init__(self, student: nn.Module, momentum: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"teacher.ema_momentum: got {momentum}, expected a number in [0, 1]")
        self.momentum = float(momentum)
        self.warmup = bool(warmup)
        self.teacher = copy.deepcopy(unwrap(student))
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def current_momentum(self) -> float:
        """The momentum of the next update: min(m, 1 - 1/(t + 1)) with the warm-up, else m."""
        if not self.warmup:
            return self.momentum
        return min(self.momentum, 1.0 - 1.0 / (self.updates + 1))

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step from the student's current weights; buffers are copied, not averaged."""
        s_params = dict(unwrap(student).named_parameters())
        t_params = dict(self.teacher.named_parameters())
        if s_params.keys() != t_params.keys():
            missing = sorted(set(s_params) ^ set(t_params))[:5]
            raise ValueError(f"ModelEMA.update: student and teacher parameters differ (e.g. {missing})")
        t_list, s_list = [], []
        for name, tp in t_params.items():
            sp = s_params[name].detach()
            if tp.dtype.is_floating_point:
                t_list.append(tp)
                s_list.append(sp.to(tp.dtype))
            else:
                tp.copy_(sp)
        if t_list:
            # phi = m*phi + (1-m)*theta, in one fused pass over all tensors.
            m = self.current_momentum()
            torch._foreach_mul_(t_list, m)
            torch._foreach_add_(t_list, s_list, alpha=1.0 - m)
        s_bufs = dict(unwrap(student).named_buffers())
        for name, tb in self.teacher.named_buffers():
            if name in s_bufs:
                tb.copy_(s_bufs[name])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "momentum": self.momentum, "warmup": self.warmup,
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.momentum = float(state.get("momentum", self.momentum))
        self.warmup = bool(state.get("warmup", self.warmup))
        self.updates = int(state.get("updates", 0))
