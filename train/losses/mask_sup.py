"""Mask-supervised terms: Dice on GT masks (the CondInst upper bound) and the default teacher pseudo-mask loss.

The pseudo-mask loss is a seam: `Criterion.pseudo_loss_fn` can be replaced by any callable with the signature of
`pseudo_mask_dice_loss` (e.g. the quality-aware loss of the teacher-student presets).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from boxseg.train.losses.config import MaskSupConfig
from boxseg.train.losses.dice import dice_loss, weighted_dice_loss
from boxseg.train.losses.fcos import reduce_mean
from boxseg.train.schedule import linear_warmup

from boxseg import ops


class PseudoMaskLoss(Protocol):
    def __call__(self, mask_logits: torch.Tensor, gt_idx: torch.Tensor, pseudo_masks: torch.Tensor,
                 weights: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor, *, iteration: int = 0
                 ) -> dict[str, torch.Tensor]: ...


def downsample_masks(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """(n, H, W) bool/float at the padded batch size -> (n, H/stride, W/stride) coverage fraction in [0, 1]."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, masks.shape[-2] // stride, masks.shape[-1] // stride, dtype=torch.float32)
    return F.avg_pool2d(masks[:, None].float(), kernel_size=stride, stride=stride)[:, 0]


def gt_mask_loss(mask_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """Mean Dice between predicted masks (N,h,w) logits and their GT masks (N,h,w) in [0,1] (CondInst)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    return weighted_dice_loss(mask_logits.sigmoid(), gt_masks)


class PseudoMaskDiceLoss:
    """Default pseudo-mask loss, BoxSeg Eq. 1 (SPEC §3.3): lambda * ramp * sum_p w_g(p)^e Dice(m_p, t_g(p)) / N,
    over proposals whose GT has a valid pseudo mask; N is their count. Target = pseudo mask zeroed outside the GT
    box, binarised at `tau_pixel` ("binary") or kept soft ("soft"). Settings: `loss.mask_sup` (`MaskSupConfig`).

    Only the plain Dice form is implemented here; `type='dice+bce'` and the BoxTeacher affinity term belong to the
    teacher-student method's loss (`boxseg.train.losses_pseudo.QualityMaskLoss`), which replaces this one."""

    def __init__(self, cfg: MaskSupConfig | None = None) -> None:
        self.cfg = cfg or MaskSupConfig()
        self.cfg.validate()

    def _check_supported(self) -> None:
        cfg = self.cfg
        if cfg.type != "dice" or cfg.affinity_weight > 0:
            raise ValueError(f"loss.mask_sup: type={cfg.type!r}, affinity_weight={cfg.affinity_weight} need the "
                             "teacher-student pseudo-mask loss (method: teacher_student); the criterion's default "
                             "pseudo-mask loss implements type='dice' with affinity_weight=0")

    def __call__(self, mask_logits: torch.Tensor, gt_idx: torch.Tensor, pseudo_masks: torch.Tensor,
                 weights: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor, *, iteration: int = 0
                 ) -> dict[str, torch.Tensor]:
        """mask_logits (P,h,w); gt_idx (P,) into the batch-concatenated pseudo labels pseudo_masks (G,h,w),
        weights (G,), valid (G,), gt_boxes (G,4) in grid units."""
        self._check_supported()
        cfg = self.cfg
        g = gt_idx.long()
        keep = valid.bool()[g] if g.numel() else torch.zeros(0, dtype=torch.bool, device=mask_logits.device)
        # N = valid samples averaged over processes (SPEC §3.3); every process reaches this all-reduce.
        n = reduce_mean(keep.sum().to(mask_logits.dtype)).clamp(min=1.0)
        ramp = cfg.lambda_ * linear_warmup(iteration, cfg.warmup_iters)
        if not bool(keep.any()):
            return {"loss_mask_sup": mask_logits.sum() * 0.0}
        h, w = mask_logits.shape[-2:]
        target = pseudo_masks.float() * ops.box_masks(gt_boxes.float(), h, w)
        if cfg.target == "binary":
            target = (target >= cfg.tau_pixel).float()
        per = dice_loss(mask_logits[keep].sigmoid(), target[g[keep]])
        w_g = weights.to(per.dtype)[g[keep]].clamp_min(0) ** cfg.weight_exponent
        return {"loss_mask_sup": ramp * (w_g * per).sum() / n}
