"""Small tensor helpers shared by the pseudo-labellers, copy-paste and the pseudo-mask losses.

Grid convention (the same as `boxseg.ops.box_masks`): a cell (y, x) is inside a box when its centre
(x + 0.5, y + 0.5) lies in the closed box. `tight_boxes` returns [x_min, y_min, x_max + 1, y_max + 1], the box whose
cells are exactly the occupied ones.
"""

from __future__ import annotations

import torch

from boxseg.ops import box_masks

__all__ = ["box_masks", "confident_mean", "tight_boxes", "weighted_fusion"]


def weighted_fusion(cand_probs: torch.Tensor, gt_idx: torch.Tensor, gates: torch.Tensor,
                    num_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-GT convex combination sum_n g_n m_n / sum_n g_n (BoxSeg Eq. 2 with given gates), no loop over GTs.

    cand_probs (M,H,W), gt_idx (M,), gates (M,) >= 0. Returns fused (G,H,W) (zeros where the gates sum to 0) and
    the per-GT gate sums (G,).
    """
    h, w = cand_probs.shape[-2:]
    dtype = cand_probs.dtype
    gsum = cand_probs.new_zeros(num_gt).index_add_(0, gt_idx, gates.to(dtype))
    acc = cand_probs.new_zeros(num_gt, h, w).index_add_(0, gt_idx, gates.to(dtype)[:, None, None] * cand_probs)
    fused = torch.where(gsum[:, None, None] > 0, acc / gsum.clamp_min(torch.finfo(dtype).tiny)[:, None, None],
                        torch.zeros_like(acc))
    return fused, gsum


def confident_mean(masks: torch.Tensor, inside: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the probabilities > tau inside the box (the m-hat of BoxSeg Eq. 5 / BT Eq. 1).

    masks (G,H,W) in [0,1], inside (G,H,W) bool. Returns (mean (G,), defined (G,) bool); mean is 0 where no pixel
    qualifies (never NaN).
    """
    conf = (masks > tau) & inside
    cnt = conf.flatten(1).sum(1)
    tot = (masks * conf).flatten(1).sum(1)
    defined = cnt > 0
    return torch.where(defined, tot / cnt.clamp_min(1).to(masks.dtype), torch.zeros_like(tot)), defined


def tight_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,H,W) bool -> tight xyxy boxes (n,4) float32 in grid units and a nonempty flag (n,); empty -> zeros."""
    n, h, w = masks.shape
    if n == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32), masks.new_zeros(0, dtype=torch.bool)
    cols = masks.any(1)  # (n, W)
    rows = masks.any(2)  # (n, H)
    nonempty = cols.any(1)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x1 = torch.where(cols, xs, w).min(1).values
    x2 = torch.where(cols, xs, -1).max(1).values + 1
    y1 = torch.where(rows, ys, h).min(1).values
    y2 = torch.where(rows, ys, -1).max(1).values + 1
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return torch.where(nonempty[:, None], boxes, torch.zeros_like(boxes)), nonempty
