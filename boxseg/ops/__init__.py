"""Custom ops for box-supervised segmentation (see docs/contracts.md; the math is in docs/method.md
"Box-supervised mask loss" and "Quality-Aware Module").

Every op has a pure-PyTorch reference in `boxseg.ops.reference` with the same signature. The functions here run the
fused C++/CUDA kernels (registered as `torch.ops.boxseg.*`, see `library.py`) when they are built for the inputs'
device (float32/float64; float16/bfloat16 inputs run in float32), and the reference otherwise: set `BOXSEG_OPS=reference` to force the
references, `BOXSEG_OPS=fused` to make a failed build an error (`_build.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from boxseg.ops import _build, library, reference
from boxseg.ops.reference import (
    adaptive_k,
    box_iou,
    box_masks,
    neighbour_offsets,
    rgb_to_lab,
    select_candidates,
)

__all__ = [
    "adaptive_k",
    "batched_nms",
    "box_iou",
    "box_masks",
    "color_similarity",
    "fuse_candidate_masks",
    "fused_available",
    "neighbour_offsets",
    "pairwise_affinity_loss",
    "rgb_to_lab",
    "select_candidates",
]

_KERNEL_DTYPES = (torch.float32, torch.float64)
_UPCAST = (torch.float16, torch.bfloat16)  # run in float32 (e.g. under autocast) rather than fall back


def fused_available(device: torch.device | str = "cpu") -> bool:
    """True when the fused kernels are built and loaded for `device` (builds them on the first call)."""
    return _build.available(device)


def _use_fused(t: Tensor) -> bool:
    return (t.dtype in _KERNEL_DTYPES or t.dtype in _UPCAST) and _build.available(t.device)


def _k(t: Tensor) -> Tensor:
    """The tensor in a dtype the kernels take (half precision runs in float32)."""
    return t.float() if t.dtype in _UPCAST else t


def color_similarity(images: Tensor, kernel_size: int = 3, dilation: int = 2, theta: float = 2.0) -> Tensor:
    """(B,3,H,W) RGB in [0,255] -> (B,k*k-1,H,W): exp(-||LAB(p)-LAB(q)||/theta) to each dilated neighbour q
    (0 outside the image). LAB is computed on the tensor's device."""
    x = images if images.is_floating_point() else images.float()
    if _use_fused(x):
        reference.neighbour_offsets(kernel_size, dilation)  # same argument errors as the reference
        return library.color_similarity(_k(x), kernel_size, dilation, float(theta))
    return reference.color_similarity(x, kernel_size, dilation, theta)


def pairwise_affinity_loss(
    mask_logits: Tensor,
    color_sim: Tensor,
    img_idx: Tensor,
    boxes: Tensor,
    tau: float = 0.3,
    dilation: int = 2,
) -> Tensor:
    """BoxInst pairwise loss (docs/method.md "Box-supervised mask loss"): scalar mean over (instance, pixel inside
    its box, in-image neighbour with similarity >= tau) of -log(p q + (1-p)(1-q)); 0 with zero gradient when nothing
    qualifies.

    mask_logits (N,H,W); color_sim (B,k*k-1,H,W); img_idx (N,) image of each instance; boxes (N,4) xyxy in
    mask-grid coordinates (pixel centres inside the box count, see `box_masks`). The fused kernels allocate
    nothing of size N x 8 x H x W, forward or backward.
    """
    if _use_fused(mask_logits):
        reference.kernel_size_from_channels(color_sim.shape[1])
        # The gradient comes out of the same pass over the pairs when autograd will want it (eager mode only: the
        # hand-over to backward is not traceable, so compiled graphs run the backward kernel instead).
        with_grad = (torch.is_grad_enabled() and mask_logits.requires_grad
                     and not torch.compiler.is_compiling())
        loss, _, _ = library.pairwise_affinity_loss(_k(mask_logits), color_sim, img_idx, boxes, float(tau),
                                                    int(dilation), with_grad)
        return loss
    return reference.pairwise_affinity_loss(mask_logits, color_sim, img_idx, boxes, tau, dilation)


def fuse_candidate_masks(
    cand_probs: Tensor,
    gt_idx: Tensor,
    box_scores: Tensor,
    box_ious: Tensor,
    gt_boxes: Tensor,
    tau_m: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """QMF (BoxSeg Eq. 2) + MQS (Eq. 5) for all GTs in one call -> (fused (G,H,W) cropped to the GT box, w (G,),
    valid (G,) bool). Invalid GTs (no candidate score > tau_m, or no fused pixel > tau_m in the box) get zeros."""
    if _use_fused(cand_probs):
        return library.fuse_candidate_masks(_k(cand_probs), gt_idx, box_scores, box_ious, gt_boxes, float(tau_m))
    return reference.fuse_candidate_masks(cand_probs, gt_idx, box_scores, box_ious, gt_boxes, tau_m)


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: kept indices (int64) sorted by score descending, ties by index ascending. A box is dropped
    when its IoU with a kept, higher-ranked box of the same class is > iou_threshold."""
    if _use_fused(boxes):
        return library.batched_nms(_k(boxes), scores, classes, float(iou_threshold))
    return reference.batched_nms(boxes, scores, classes, iou_threshold)
