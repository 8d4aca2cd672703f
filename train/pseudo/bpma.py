"""BoxTeacher pseudo-labeller (docs/method.md "BoxTeacher's labeller"): Box-based Pseudo Mask Assignment (BT Alg. 1,
corrected indexing) and the Mask-aware Confidence Score (BT Eq. 1).

Input: the teacher's post-NMS detections of one image (boxes, scores, mask probabilities at `mask_stride`) and
the GT boxes, all in the teacher frame. Predictions are visited by descending sorting score; each takes the
still-unassigned GT with the highest IoU >= tau_iou (ties go to the higher GT index, as the corrected `>=` test
does). GT index 0 is assignable (the public code's `> 0` test is a bug). Assigned masks are zeroed outside the GT box.

Scores (`bpma.score`):
- `mcs` (default): sort by MCS computed inside the *predicted* box (the GT is not known before assignment), then
  weight each GT's mask by MCS recomputed inside the *GT* box (BT Eq. 1 needs the GT box, known only
  after the assignment). `bpma.mcs_region=image`
  instead uses the whole image for both (the public code's choice).
- `cls`: sort and weight by the detection confidence.
- `none`: sort by the detection confidence, weight 1 (BPMA without a quality score: BoxSeg Table 4, row 2).
"""

from __future__ import annotations

import torch

from boxseg.ops import box_iou

from .common import box_masks, confident_mean
from .config import BPMAConfig


def mask_confidence(conf: torch.Tensor, masks: torch.Tensor, region: torch.Tensor | None, tau: float
                    ) -> torch.Tensor:
    """BT Eq. 1: sqrt(c * mean of the mask probabilities > tau inside `region`); 0 where no pixel qualifies.

    conf (N,), masks (N,H,W), region (N,H,W) bool or None for the whole image.
    """
    if region is None:
        region = torch.ones_like(masks, dtype=torch.bool)
    m_hat, defined = confident_mean(masks, region, tau)
    return torch.where(defined, (conf.to(masks.dtype).clamp_min(0) * m_hat).sqrt(), torch.zeros_like(m_hat))


def assign(pred_boxes: torch.Tensor, sort_scores: torch.Tensor, gt_boxes: torch.Tensor, tau_iou: float,
           tau_c: float) -> torch.Tensor:
    """The corrected BT Alg. 1 assignment loop. Returns A (K,) int64: prediction index per GT, -1 if none."""
    k = gt_boxes.shape[0]
    assigned = [-1] * k
    if k == 0 or pred_boxes.shape[0] == 0:
        return torch.tensor(assigned, dtype=torch.long, device=gt_boxes.device)
    ious = box_iou(pred_boxes.float(), gt_boxes.float()).cpu().tolist()
    order = torch.sort(sort_scores, descending=True, stable=True).indices.cpu().tolist()
    keep = (sort_scores >= tau_c).cpu().tolist()
    for i in order:
        if not keep[i]:
            continue
        best_iou, best_j = -1.0, -1
        for j in range(k):
            if assigned[j] != -1:
                continue  # this GT already has a mask
            iou = ious[i][j]
            if iou >= tau_iou and iou >= best_iou:
                best_iou, best_j = iou, j
        if best_j != -1:
            assigned[best_j] = i
    return torch.tensor(assigned, dtype=torch.long, device=gt_boxes.device)


def bpma_label(pred_boxes: torch.Tensor, pred_scores: torch.Tensor, pred_masks: torch.Tensor,
               gt_boxes: torch.Tensor, cfg: BPMAConfig | None = None, mask_stride: int = 4
               ) -> dict[str, torch.Tensor]:
    """Pseudo masks for one image. pred_boxes (N,4) teacher pixels, pred_scores (N,), pred_masks (N,h,w)
    probabilities, gt_boxes (K,4) teacher pixels. Returns masks (K,h,w) zero outside each GT box, weights (K,),
    valid (K,) bool, assigned (K,) prediction index or -1."""
    cfg = cfg or BPMAConfig()
    n, h, w = pred_masks.shape
    k = gt_boxes.shape[0]
    dev = gt_boxes.device
    masks_f = pred_masks.float()
    gt_inside = box_masks(gt_boxes.float() / mask_stride, h, w)
    if cfg.score in ("cls", "none"):
        sort_scores = pred_scores.float()
    else:
        region = None if cfg.mcs_region == "image" else box_masks(pred_boxes.float() / mask_stride, h, w)
        sort_scores = mask_confidence(pred_scores, masks_f, region, cfg.tau_pixel)
    assigned = assign(pred_boxes, sort_scores, gt_boxes, cfg.tau_iou, cfg.tau_c)
    valid = assigned >= 0
    idx = assigned.clamp_min(0)
    if n == 0:
        masks = torch.zeros(k, h, w, device=dev)
        weights = torch.zeros(k, device=dev)
    else:
        masks = masks_f[idx] * gt_inside * valid[:, None, None]  # "rectify": nothing outside the GT box
        if cfg.score == "none":
            weights = torch.ones(k, device=dev)
        elif cfg.score == "cls":
            weights = pred_scores.float()[idx]
        else:
            region = None if cfg.mcs_region == "image" else gt_inside
            weights = mask_confidence(pred_scores.float()[idx], masks_f[idx], region, cfg.tau_pixel)
            # No confident pixel inside the GT box: MCS is undefined, so the mask gets no loss (as QAM's MQS).
            valid = valid & (weights > 0)
            masks = masks * valid[:, None, None]
        weights = torch.where(valid, weights, torch.zeros_like(weights))
    return {"masks": masks, "weights": weights, "valid": valid, "assigned": assigned}
