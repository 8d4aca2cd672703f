"""SIM's mask loss (SIM Eq. 8; docs/method.md "SIM"): BCE + Dice on hard pseudo masks, each pixel weighted by the
ignore map W (0 inside the tau_low..tau_high band), so an uncertain pixel teaches nothing either way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dice import DICE_EPS


def ignore_bce_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                    eps: float = DICE_EPS) -> torch.Tensor:
    """Per-instance BCE + Dice, both restricted to pixels with weight > 0. logits, target, weight (N, H, W) ->
    (N,). BCE is the weighted mean over an instance's pixels (0 when every pixel is ignored); Dice is
    1 - 2 sum(W p t) / (sum(W p^2) + sum(W t^2) + eps)."""
    if not (logits.shape == target.shape == weight.shape):
        raise ValueError(f"ignore_bce_dice: logits {tuple(logits.shape)}, target {tuple(target.shape)} and weight "
                         f"{tuple(weight.shape)} differ")
    w = weight.flatten(1).to(logits.dtype)
    t = target.flatten(1).to(logits.dtype)
    z = logits.flatten(1)
    bce = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * w).sum(1) / w.sum(1).clamp_min(1)
    p = z.sigmoid()
    dice = 1.0 - 2.0 * (w * p * t).sum(1) / ((w * p * p).sum(1) + (w * t * t).sum(1) + eps)
    return bce + dice
