"""Mask-supervised terms: Dice on GT masks (the CondInst upper bound) and the teacher pseudo-mask losses.

- BoxSeg Eq. 1 (docs/method.md "Pseudo-mask loss"): L_mask = (1/N) sum_p w_g(p) * Dice(m^s_p, target_g(p)), over
  the student's positive samples whose GT has a valid pseudo mask; N = their count (averaged over processes,
  clamped to >= 1), not sum(w). Weighted by lambda (0.5) and a linear warm-up (10k iterations). Target: the pseudo
  mask zeroed outside the GT box, binarised at tau_pixel (`target=binary`) or kept soft (`target=soft`).
- BoxTeacher Eq. 2-5 (the same section): the same sum with an added noise-reduced affinity term weighted by
  `affinity_weight` (0.1 in the boxteacher preset): the teacher map is smoothed by a 3x3 average (centre included),
  and the BoxInst same-label term -log(p_i p_j + (1-p_i)(1-p_j)) is enforced only on pairs of the dilation-2
  8-neighbourhood whose smoothed same-label probability mu exceeds tau_a, with centres inside the GT box.

The pseudo-mask loss is a seam: `Criterion.pseudo_loss_fn` can be replaced by any callable with the
`PseudoMaskLoss` signature (`tutor` flags the objects copy-paste added); the default is
`QualityMaskLoss(loss.mask_sup)`, SIM's is `boxseg.train.losses.sim.SIMMaskLoss`.
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
                 weights: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor, *, iteration: int = 0,
                 tutor: torch.Tensor | None = None) -> dict[str, torch.Tensor]: ...


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


def mask_targets(pseudo_masks: torch.Tensor, boxes: torch.Tensor, cfg: MaskSupConfig) -> torch.Tensor:
    """Dice targets (G,H,W): the pseudo mask zeroed outside its GT box (boxes in grid units), then binarised at
    tau_pixel (`binary`) or kept soft (`soft`)."""
    h, w = pseudo_masks.shape[-2:]
    cropped = pseudo_masks.float() * ops.box_masks(boxes.float(), h, w)
    return (cropped > cfg.tau_pixel).float() if cfg.target == "binary" else cropped


def _shift(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """out[..., y, x] = x[..., y+dy, x+dx] (0 outside) and the in-image mask (H, W)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ok = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    ys, ye, xs, xe = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    if ys < ye and xs < xe:
        out[..., ys:ye, xs:xe] = x[..., ys + dy:ye + dy, xs + dx:xe + dx]
        ok[ys:ye, xs:xe] = True
    return out, ok


def noise_reduced_affinity(mask_logits: torch.Tensor, teacher_probs: torch.Tensor, boxes: torch.Tensor,
                           tau_a: float = 0.5, dilation: int = 2) -> torch.Tensor:
    """BT Eq. 3-5 per instance. mask_logits (N,H,W) student logits, teacher_probs (N,H,W) soft pseudo masks,
    boxes (N,4) GT boxes in grid units. Returns (N,) losses (0 for an instance without a qualifying pair).

    Loops over the 8 offsets so at most (N,H,W) is alive per offset (no N x 8 x H x W tensor).
    """
    n, h, w = mask_logits.shape
    if n == 0:
        return mask_logits.new_zeros(0)
    g = teacher_probs.to(mask_logits.dtype).unsqueeze(1)
    # Eq. 3: average of the pixel and its 3x3 neighbourhood mean (centre included; borders average what exists).
    g_s = (0.5 * (g + F.avg_pool2d(g, 3, stride=1, padding=1, count_include_pad=False))).squeeze(1)
    log_fg = F.logsigmoid(mask_logits)
    log_bg = F.logsigmoid(-mask_logits)
    centre_ok = ops.box_masks(boxes.float(), h, w)
    num = mask_logits.new_zeros(n)
    den = mask_logits.new_zeros(n)
    d = dilation
    for dy, dx in ((-d, -d), (-d, 0), (-d, d), (0, -d), (0, d), (d, -d), (d, 0), (d, d)):
        g_n, ok = _shift(g_s, dy, dx)
        mu = g_s * g_n + (1 - g_s) * (1 - g_n)  # Eq. 4
        edge = ((mu > tau_a) & ok & centre_ok).to(mask_logits.dtype)
        fg_n, _ = _shift(log_fg, dy, dx)
        bg_n, _ = _shift(log_bg, dy, dx)
        log_same = torch.logaddexp(log_fg + fg_n, log_bg + bg_n)  # log(p_i p_j + (1-p_i)(1-p_j)), stable
        num = num - (log_same * edge).flatten(1).sum(1)
        den = den + edge.flatten(1).sum(1)
    return num / den.clamp_min(1.0)  # Eq. 5


def quality_mask_loss(
    mask_logits: torch.Tensor,
    gt_idx: torch.Tensor,
    pseudo_masks: torch.Tensor,
    weights: torch.Tensor,
    valid: torch.Tensor,
    gt_boxes: torch.Tensor,
    cfg: MaskSupConfig | None = None,
    iteration: int = 0,
) -> dict[str, torch.Tensor]:
    """Quality-aware pseudo-mask loss (BoxSeg Eq. 1; BoxTeacher Eq. 2 when affinity_weight > 0).

    mask_logits (P,H,W): the student's masks of its positive samples; gt_idx (P,) index of each sample's GT into
    the (batch-concatenated) pseudo labels: pseudo_masks (G,H,W) soft, weights (G,), valid (G,) bool, gt_boxes (G,4)
    in the same grid units as the masks. Returns named, already-weighted scalars: `loss_mask_sup` and, when the
    affinity term is on, `loss_mask_affinity`. Zero (with a gradient path) when no sample has a valid pseudo mask.
    """
    cfg = cfg or MaskSupConfig()
    if mask_logits.shape[-2:] != pseudo_masks.shape[-2:]:
        raise ValueError(f"quality_mask_loss: mask_logits grid {tuple(mask_logits.shape[-2:])} differs from "
                         f"pseudo_masks grid {tuple(pseudo_masks.shape[-2:])}")
    ramp = linear_warmup(iteration, cfg.warmup_iters)
    gt_idx = gt_idx.long()
    keep = valid.bool()[gt_idx] if gt_idx.numel() else gt_idx.new_zeros(0, dtype=torch.bool)
    # N = valid samples averaged over processes (BoxSeg Eq. 1's N); every process reaches this all-reduce.
    n_norm = reduce_mean(keep.sum().to(mask_logits.dtype)).clamp_min(1.0)
    zero = mask_logits.sum() * 0.0
    out = {"loss_mask_sup": zero}
    if cfg.affinity_weight > 0:
        out["loss_mask_affinity"] = zero.clone()
    if not bool(keep.any()):
        return out
    logits = mask_logits[keep]
    g = gt_idx[keep]
    w = weights.to(logits.dtype)[g].clamp_min(0) ** cfg.weight_exponent
    target = mask_targets(pseudo_masks, gt_boxes, cfg)[g]
    probs = logits.sigmoid()
    pixel = dice_loss(probs, target)  # Dice of docs/method.md "Notation", per instance
    if cfg.type == "dice+bce":
        pixel = pixel + F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    out["loss_mask_sup"] = ramp * cfg.lambda_ * (w * pixel).sum() / n_norm
    if cfg.affinity_weight > 0:
        aff = noise_reduced_affinity(logits, pseudo_masks[g], gt_boxes[g], cfg.affinity_tau, cfg.affinity_dilation)
        out["loss_mask_affinity"] = ramp * cfg.affinity_weight * (w * aff).sum() / n_norm
    return out


class QualityMaskLoss:
    """`Criterion.pseudo_loss_fn` (the `PseudoMaskLoss` signature): `quality_mask_loss` with a fixed
    `MaskSupConfig`."""

    def __init__(self, cfg: MaskSupConfig | None = None) -> None:
        self.cfg = cfg or MaskSupConfig()
        self.cfg.validate()

    def __call__(self, mask_logits: torch.Tensor, gt_idx: torch.Tensor, pseudo_masks: torch.Tensor,
                 weights: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor, *, iteration: int = 0,
                 tutor: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # Pasted tutors are weighted by their w like every other object (BoxSeg Eq. 1): `tutor` is not read.
        return quality_mask_loss(mask_logits, gt_idx, pseudo_masks, weights, valid, gt_boxes, self.cfg, iteration)
