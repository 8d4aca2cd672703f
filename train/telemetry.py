"""What the teacher-student parts did in one iteration, so a run where QAM or copy-paste silently did nothing shows
at a glance (metrics.jsonl `telemetry`, the progress bar, `boxseg train --json`).

Per batch:
  pseudo_valid_frac   GT boxes with a valid pseudo mask / GT boxes (before copy-paste adds tutors)
  w_mean, w_p10/50/90 quality w of the valid pseudo masks (BoxSeg Eq. 5; BoxTeacher's MCS for BPMA)
  teacher_score_p50   median over GT objects of the labeller's best GT-class score among locations whose box has
                      IoU >= 0.5 with the GT box (0 where none): how far the teacher is from QAM's gate
  bank_size, pastes_per_image
  pseudo_iou          mean IoU of the valid binarised pseudo masks with the dataset's GT masks, at the loss grid
                      (stride 4, student frame). Only when the training data has masks; a diagnostic that never
                      feeds training (the GT masks are dropped from the batch right after).
Values that are undefined for a batch (no valid pseudo mask, no GT masks) are NaN; the loop averages a log window
with nanmean and writes NaN as null.
"""

from __future__ import annotations

import math

import torch

from boxseg.ops import box_iou

KEYS = ("pseudo_valid_frac", "w_mean", "w_p10", "w_p50", "w_p90", "teacher_score_p50", "bank_size",
        "pastes_per_image", "pseudo_iou")
# Short names for the progress bar.
BAR = {"pseudo_valid_frac": "valid", "w_mean": "w", "pseudo_iou": "pIoU", "bank_size": "bank",
       "pastes_per_image": "paste"}
NAN = float("nan")


def best_gt_scores(boxes: torch.Tensor, scores: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                   iou_thresh: float = 0.5) -> torch.Tensor:
    """boxes (L,4), scores (L,C) of every location; gt (G,4)/(G,) -> (G,) the best GT-class score among the
    locations whose box overlaps the GT box with IoU >= iou_thresh (0 where none)."""
    g = gt_boxes.shape[0]
    if g == 0 or boxes.shape[0] == 0:
        return scores.new_zeros(g)
    iou = box_iou(boxes.float(), gt_boxes.float().to(boxes.device))  # (L, G)
    cls_scores = scores[:, gt_classes.to(scores.device).long()]  # (L, G)
    return torch.where(iou >= iou_thresh, cls_scores, torch.zeros_like(cls_scores)).max(0).values


def mask_iou(pred: torch.Tensor, gt: torch.Tensor, thresh: float = 0.5) -> torch.Tensor:
    """(n,H,W) soft predictions and (n,H,W) GT masks -> (n,) IoU of pred > thresh with gt > 0.5 (1 for two empties)."""
    p = (pred > thresh).flatten(1)
    t = (gt.float() > 0.5).flatten(1)
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def downsample_gt(masks: torch.Tensor, stride: int, out_shape: tuple[int, int]) -> torch.Tensor:
    """(n,H,W) bool GT masks of the padded student batch -> (n,h,w) coverage at the loss grid."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *out_shape), dtype=torch.float32)
    pooled = torch.nn.functional.avg_pool2d(masks.float()[:, None], stride, stride)[:, 0]
    return pooled[:, :out_shape[0], :out_shape[1]]


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.float(), q)) if values.numel() else NAN


def summarize(num_gt: int, valid: torch.Tensor, weights: torch.Tensor, teacher_scores: torch.Tensor,
              bank_size: int, pastes: int, num_images: int, ious: torch.Tensor | None) -> dict[str, float]:
    """One batch's telemetry (see the module docstring); `valid`, `weights`, `teacher_scores` are over the batch's
    GT boxes, `ious` over its valid pseudo masks (None: no GT masks)."""
    w = weights[valid].float()
    return {
        "pseudo_valid_frac": float(valid.sum()) / num_gt if num_gt else NAN,
        "w_mean": float(w.mean()) if w.numel() else NAN,
        "w_p10": _quantile(w, 0.1),
        "w_p50": _quantile(w, 0.5),
        "w_p90": _quantile(w, 0.9),
        "teacher_score_p50": _quantile(teacher_scores, 0.5),
        "bank_size": float(bank_size),
        "pastes_per_image": pastes / max(num_images, 1),
        "pseudo_iou": float(ious.mean()) if ious is not None and ious.numel() else NAN,
    }


def window_mean(records: list[dict[str, float]]) -> dict[str, float | None]:
    """nanmean per key over a log window; None where every value is NaN (JSON null)."""
    out: dict[str, float | None] = {}
    for key in records[0] if records else ():
        vals = [r[key] for r in records if key in r and not math.isnan(r[key])]
        out[key] = sum(vals) / len(vals) if vals else None
    return out
