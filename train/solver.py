"""Optimizer and learning-rate schedule: SGD with momentum, linear warm-up, multi-step decay (docs/method.md
"COCO recipe")."""

from __future__ import annotations

import bisect

import torch
from boxseg.train.config import ConfigError, SolverConfig
from torch import nn

_NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
    nn.InstanceNorm2d,
)


def lr_factor(iteration: int, cfg: SolverConfig) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based): linear warm-up times gamma^(steps passed)."""
    factor = cfg.gamma ** bisect.bisect_right(sorted(cfg.steps), iteration)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1.0 - alpha) + alpha
    return factor


def param_groups(model: nn.Module, cfg: SolverConfig) -> list[dict]:
    """Two groups: normalisation-layer parameters (``weight_decay_norm``) and the rest (``weight_decay``)."""
    norm, other, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (norm if isinstance(module, _NORM_TYPES) else other).append(p)
    groups = [{"params": other, "weight_decay": cfg.weight_decay}]
    if norm:
        groups.append({"params": norm, "weight_decay": cfg.weight_decay_norm})
    return groups


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.Optimizer:
    if cfg.optimizer != "sgd":
        raise ConfigError(f"solver.optimizer: '{cfg.optimizer}' is not supported (expected 'sgd')")
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SolverConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration, after the optimizer; a plain function so the state dict holds no config."""

    def factor(it: int) -> float:
        return lr_factor(it, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def validate_solver(cfg: SolverConfig) -> None:
    """Reject values that would train silently wrong."""
    checks = [
        (cfg.lr > 0, "solver.lr", "a positive number"),
        (cfg.ims_per_batch >= 1, "solver.ims_per_batch", "an integer >= 1"),
        (cfg.max_iter >= 1, "solver.max_iter", "an integer >= 1"),
        (cfg.warmup_iters >= 0, "solver.warmup_iters", "an integer >= 0"),
        (0 <= cfg.momentum < 1, "solver.momentum", "a number in [0, 1)"),
        (cfg.clip_grad_norm >= 0, "solver.clip_grad_norm", "a number >= 0 (0 disables clipping)"),
        (all(s > 0 for s in cfg.steps), "solver.steps", "positive iteration numbers"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"{key}: got {getattr(cfg, key.split('.')[1])!r}; expected {expected}")
