"""Dice loss (docs/method.md "Notation"): Dice(p, q) = 1 - 2*sum(p*q) / (sum(p^2) + sum(q^2) + eps), eps = 1e-5."""

from __future__ import annotations

import torch

DICE_EPS = 1e-5


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Per-instance Dice loss: (N, ...) probabilities and (N, ...) targets in [0, 1] -> (N,)."""
    if pred.shape != target.shape:
        raise ValueError(f"dice_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    p = pred.flatten(1)
    q = target.flatten(1).to(p.dtype)
    inter = (p * q).sum(1)
    denom = (p * p).sum(1) + (q * q).sum(1) + eps
    return 1.0 - 2.0 * inter / denom


def weighted_dice_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                       valid: torch.Tensor | None = None, eps: float = DICE_EPS) -> torch.Tensor:
    """sum_i valid_i * w_i * Dice_i / max(1, N_valid): normalised by the number of valid instances, not by the
    sum of weights (BoxSeg Eq. 1). Returns a 0 that keeps the graph when nothing is valid."""
    per = dice_loss(pred, target, eps)
    w = torch.ones_like(per) if weights is None else weights.to(per.dtype)
    if valid is not None:
        w = w * valid.to(per.dtype)
        n = valid.sum()
    else:
        n = torch.tensor(per.shape[0], device=per.device)
    return (per * w).sum() / n.clamp(min=1).to(per.dtype)
