"""SIM's mask loss (SIM Eq. 8; docs/method.md "SIM"): BCE + Dice on hard pseudo masks, each pixel weighted by the
ignore map W (0 inside the tau_low..tau_high band), so an uncertain pixel teaches nothing either way."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from boxseg import ops

from .dice import DICE_EPS
from .fcos import reduce_mean

if TYPE_CHECKING:
    from ..pseudo.config import SIMConfig


def ignore_band(prob: torch.Tensor, inside: torch.Tensor, tau_low: float = 0.3, tau_high: float = 0.7
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo mask and ignore weights (SIM Sec. 3.3): 1 where prob >= tau_high inside the GT box, 0 where
    prob <= tau_low or outside the box, weight 0 strictly between the two inside the box. -> (target, weight)."""
    target = ((prob >= tau_high) & inside).to(prob.dtype)
    band = inside & (prob > tau_low) & (prob < tau_high)
    return target, (~band).to(prob.dtype)


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


class SIMMaskLoss:
    """`Criterion.pseudo_loss_fn` for SIM (Eqs. 8-10): lambda_pseudo * L_pseudo over the student's positives of the
    image's own objects plus lambda_paste * L_paste over the positives of pasted ones, both divided by the number
    of positives with a valid pseudo label (one N for the two sums, as BoxSeg Eq. 1 does). The targets and ignore
    weights come from the blended map with the ignore band; outside the GT box is background. SIM trains with
    the low-level losses alone for the warm-up, then switches this loss on at once (no ramp).
    """

    def __init__(self, cfg: SIMConfig, warmup_iters: int) -> None:
        self.cfg = cfg
        self.warmup_iters = int(warmup_iters)

    def __call__(self, mask_logits: torch.Tensor, gt_idx: torch.Tensor, pseudo_masks: torch.Tensor,
                 weights: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor, *, iteration: int = 0,
                 tutor: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        gt_idx = gt_idx.long()
        keep = valid.bool()[gt_idx] if gt_idx.numel() else gt_idx.new_zeros(0, dtype=torch.bool)
        n_norm = reduce_mean(keep.sum().to(mask_logits.dtype)).clamp_min(1.0)
        zero = mask_logits.sum() * 0.0
        if iteration < self.warmup_iters or not bool(keep.any()):
            return {"loss_mask_sup": zero}
        g = gt_idx[keep]
        h, w = pseudo_masks.shape[-2:]
        inside = ops.box_masks(gt_boxes.float(), h, w)[g]
        target, weight = ignore_band(pseudo_masks.float()[g], inside, self.cfg.tau_low, self.cfg.tau_high)
        per = ignore_bce_dice(mask_logits[keep], target, weight)
        pasted = tutor.bool()[g] if tutor is not None else torch.zeros_like(g, dtype=torch.bool)
        lam = torch.where(pasted, per.new_tensor(self.cfg.lambda_paste), per.new_tensor(self.cfg.lambda_pseudo))
        return {"loss_mask_sup": (lam * per).sum() / n_norm}
