"""BoxSeg Quality-Aware Module (Sec. 3.2): Box-Quality Ranking, Quality-aware Masks Fusion, Mask-Quality Scoring.

Works on plain tensors for one image in the teacher frame, so the dense-model glue is a thin adapter:
    qam_label(cand_boxes, cand_scores, cand_mask_fn, gt_boxes, gt_classes, gt_areas_orig, cfg)
`cand_mask_fn(cand_idx) -> (M, h, w)` returns the candidates' mask probabilities at `mask_stride` (run only on the
candidates BQR keeps). The default configuration goes through `boxseg.ops.select_candidates` and
`boxseg.ops.fuse_candidate_masks`; options the fused op does not cover (soft gate, separate score/pixel thresholds)
use the general pure-torch path in `fuse_general`, which equals the op on the default settings (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from boxseg.ops import adaptive_k, box_iou, fuse_candidate_masks, select_candidates

from .common import box_masks, confident_mean, tight_boxes, weighted_fusion
from .config import QAMConfig

MaskFn = Callable[[torch.Tensor], torch.Tensor]


def compute_k(areas: torch.Tensor, cfg: QAMConfig) -> torch.Tensor:
    """Candidates per GT: the fixed K, or BoxSeg Eq. 4 (adaptive K) with the configured rounding. -> int64 (G,)."""
    if not cfg.adaptive_k:
        return torch.full(areas.shape, cfg.k, dtype=torch.long, device=areas.device)
    if cfg.k_rounding == "half_up":
        return adaptive_k(areas, cfg.k_min, cfg.k_max, cfg.area_small, cfg.area_large)
    # floor / ceil: the same piecewise-linear K(a) as ops.adaptive_k, rounded the other way.
    a = areas.to(torch.float64).clamp_min(0)
    s_lo, s_hi = math.sqrt(cfg.area_small), math.sqrt(cfg.area_large)
    k_real = cfg.k_min + (cfg.k_max - cfg.k_min) * (a.sqrt() - s_lo) / (s_hi - s_lo)
    k_int = torch.floor(k_real + 1e-9) if cfg.k_rounding == "floor" else torch.ceil(k_real - 1e-9)
    return k_int.clamp(cfg.k_min, cfg.k_max).to(torch.long)


def fuse_general(cand_probs: torch.Tensor, gt_idx: torch.Tensor, box_scores: torch.Tensor,
                 box_ious: torch.Tensor, inside: torch.Tensor, cfg: QAMConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QMF (Eq. 2) + MQS (Eq. 5) with every option: hard or soft gate, separate tau_score / tau_pixel.

    inside (G,H,W) bool is each GT's box on the mask grid. Returns (fused box-cropped (G,H,W), w (G,), valid (G,)).
    Soft gate (PAIS-style, docs/method.md "Quality-Aware Module"): 1[s > tau] becomes min(1, (s / tau)**beta) with
    beta = soft_gate_power, so a candidate below the gate still counts, less the further below; beta -> inf gives
    the hard gate back. s-hat is the same-weighted mean.
    """
    g = inside.shape[0]
    s = box_scores.to(cand_probs.dtype)
    u = box_ious.to(cand_probs.dtype)
    if cfg.gate == "hard":
        sel = (s > cfg.tau_score).to(s.dtype)
    else:
        sel = (s.clamp_min(0) / max(cfg.tau_score, torch.finfo(s.dtype).tiny)).clamp_max(1) ** cfg.soft_gate_power
    gates = sel * (s * u).clamp_min(0).sqrt()
    fused, gsum = weighted_fusion(cand_probs, gt_idx, gates, g)
    sel_sum = s.new_zeros(g).index_add_(0, gt_idx, sel)
    s_hat = s.new_zeros(g).index_add_(0, gt_idx, sel * s) / sel_sum.clamp_min(torch.finfo(s.dtype).tiny)
    m_hat, defined = confident_mean(fused, inside, cfg.tau_pixel)
    valid = (gsum > 0) & (sel_sum > 0) & defined
    w = torch.where(valid, (s_hat * m_hat).clamp_min(0).sqrt(), torch.zeros_like(m_hat))
    fused = torch.where(valid[:, None, None], fused * inside, torch.zeros_like(fused))
    return fused, w, valid


def _first_per_gt(gt_idx: torch.Tensor, num_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of each GT's first (top-ranked) candidate in the grouped selection, and whether it has one."""
    m = gt_idx.shape[0]
    first = torch.full((num_gt,), m, dtype=torch.long, device=gt_idx.device)
    first.scatter_reduce_(0, gt_idx, torch.arange(m, device=gt_idx.device), reduce="amin")
    has = first < m
    return first.clamp_max(max(m - 1, 0)), has


def _smaller_wins(masks: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, tau: float) -> torch.Tensor:
    """BoxCaseg merge: a pixel claimed (> tau) by several valid masks stays only with the smallest GT box."""
    if masks.shape[0] < 2:
        return masks
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    area = torch.where(valid, area, torch.full_like(area, float("inf")))
    claimed = (masks > tau) & valid[:, None, None]
    area_map = torch.where(claimed, area[:, None, None], torch.full_like(masks, float("inf")))
    winner_area = area_map.min(0).values
    # Ties in area keep every tied mask (no arbitrary winner).
    lose = claimed & (area[:, None, None] > winner_area[None])
    return masks * (~lose)


def qam_label(
    cand_boxes: torch.Tensor,
    cand_scores: torch.Tensor,
    cand_mask_fn: MaskFn,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_areas_orig: torch.Tensor | None = None,
    cfg: QAMConfig | None = None,
    mask_stride: int = 4,
    mask_shape: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Pseudo masks and quality scores for one image (BoxSeg Eqs. 2, 4, 5), teacher frame.

    cand_boxes (P,4) xyxy teacher pixels (pre-NMS pool); cand_scores (P,C) IoU-aware class probabilities;
    gt_boxes (G,4) teacher pixels; gt_classes (G,); gt_areas_orig (G,) GT-box areas in original-image pixels
    (needed for `area_frame=original`). Returns masks (G,h,w) soft and zero outside the GT box, weights (G,),
    valid (G,) bool, k (G,) and num_candidates (G,) (for logging). Never NaN.
    """
    cfg = cfg or QAMConfig()
    dev = gt_boxes.device
    g = gt_boxes.shape[0]
    gt_boxes = gt_boxes.float()
    if mask_shape is None:
        mask_shape = tuple(cand_mask_fn(torch.zeros(0, dtype=torch.long, device=dev)).shape[-2:])
    h, w = mask_shape
    wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
    # Width or height < 1 px in the teacher frame -> invalid (docs/method.md "Quality-Aware Module")
    degenerate = (wh < 1).any(1)
    if cfg.adaptive_k and cfg.area_frame == "original":
        if gt_areas_orig is None:
            raise ValueError("qam_label: gt_areas_orig is required when qam.area_frame='original'")
        areas = gt_areas_orig.to(dev).float()
    else:
        areas = wh.clamp_min(0).prod(1)
    k = torch.ones(g, dtype=torch.long, device=dev) if cfg.stages == "bqr" else compute_k(areas, cfg)
    k = torch.where(degenerate, torch.zeros_like(k), k)
    cand_idx, gt_idx, s, u = select_candidates(cand_boxes.float(), cand_scores, gt_boxes, gt_classes, k,
                                               u_min=cfg.u_min, require_class_match=cfg.require_class_match)
    num_cand = torch.zeros(g, dtype=torch.long, device=dev).index_add_(0, gt_idx, torch.ones_like(gt_idx))
    out = {"k": k, "num_candidates": num_cand}
    if cand_idx.numel() == 0:
        out.update(masks=torch.zeros(g, h, w, device=dev), weights=torch.zeros(g, device=dev),
                   valid=torch.zeros(g, dtype=torch.bool, device=dev))
        return out
    uniq, inverse = torch.unique(cand_idx, return_inverse=True)
    probs = cand_mask_fn(uniq).float()[inverse]
    if probs.shape[-2:] != (h, w):
        raise ValueError(f"qam_label: cand_mask_fn returned masks of size {tuple(probs.shape[-2:])}, "
                         f"expected {(h, w)}")
    grid_boxes = gt_boxes / mask_stride
    inside = box_masks(grid_boxes, h, w)

    if cfg.stages == "bqr":
        # Table 4 "BQR only": the top-1 candidate by box-IoU, weight 1.
        first, has = _first_per_gt(gt_idx, g)
        masks = probs[first] * inside * has[:, None, None]
        valid = has
        weights = valid.float()
    else:
        if cfg.gate == "hard" and cfg.tau_score == cfg.tau_pixel:
            masks, weights, valid = fuse_candidate_masks(probs, gt_idx, s, u, grid_boxes, tau_m=cfg.tau_score)
        else:
            masks, weights, valid = fuse_general(probs, gt_idx, s, u, inside, cfg)
        if cfg.empty_policy == "top1":
            # No candidate above the gate (K-hat = 0): fall back to the highest-IoU candidate, w = sqrt(s * m-hat).
            first, has = _first_per_gt(gt_idx, g)
            above = torch.zeros(g, dtype=torch.long, device=dev).index_add_(0, gt_idx, (s > cfg.tau_score).long())
            fallback = has & (above == 0) & ~valid
            if bool(fallback.any()):
                top = probs[first] * inside
                m_hat, defined = confident_mean(top, inside, cfg.tau_pixel)
                use = fallback & defined
                w_top = (s[first].float() * m_hat).clamp_min(0).sqrt()
                masks = torch.where(use[:, None, None], top, masks)
                weights = torch.where(use, w_top, weights)
                valid = valid | use
        if cfg.stages == "bqr_qmf":
            weights = valid.float()  # Table 4 "BQR+QMF": Eq. 2 fusion without MQS, weight 1

    valid = valid & ~degenerate
    masks, weights, valid = clean_up(masks, weights, valid, gt_boxes, cfg, mask_stride)
    out.update(masks=masks, weights=weights, valid=valid)
    return out


def clean_up(masks: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor,
             cfg: QAMConfig, mask_stride: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BoxCaseg's clean-up of one image's labels (`qam.overlap_resolution`, `qam.box_agreement`), then invalid
    labels zeroed. masks (G,h,w) on a grid of stride `mask_stride` over gt_boxes' frame (1: the boxes' own
    pixels). Returns (masks, weights, valid)."""
    g = gt_boxes.shape[0]
    if cfg.overlap_resolution == "smaller_wins":
        masks = _smaller_wins(masks, gt_boxes, valid, cfg.tau_pixel)
    if cfg.box_agreement != "off" and g > 0:
        tb, nonempty = tight_boxes(masks > cfg.tau_pixel)
        agree = box_iou(tb * mask_stride, gt_boxes).diagonal() * nonempty
        if cfg.box_agreement == "gate":
            valid = valid & (agree >= cfg.box_agreement_thresh)
        else:
            weights = weights * agree
    weights = torch.where(valid, weights, torch.zeros_like(weights))
    masks = torch.where(valid[:, None, None], masks, torch.zeros_like(masks))
    return masks, weights, valid
