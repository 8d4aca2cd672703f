"""`torch.library` registration of the fused ops (namespace `boxseg`).

Each public op is a `torch.library.custom_op` whose implementation calls the compiled kernel
(`torch.ops.boxseg_ext.*`, CPU or CUDA by the inputs' device), with a fake (meta) implementation so
`torch.compile`/`torch.export` can trace it, and autograd where the op is differentiable. Callers go through
`boxseg.ops`, which only routes here when `boxseg.ops._build.available(device)` says the kernels are built.
"""

from __future__ import annotations

import torch
from torch import Tensor

from boxseg.ops import _build


def _ext(device: torch.device) -> object:
    _build.ensure("cuda" if device.type == "cuda" else "cpu")
    return torch.ops.boxseg_ext


# --- color_similarity --------------------------------------------------------------------------------------------
@torch.library.custom_op("boxseg::color_similarity", mutates_args=())
def color_similarity(images: Tensor, kernel_size: int, dilation: int, theta: float) -> Tensor:
    return _ext(images.device).color_similarity(images, kernel_size, dilation, theta)


@color_similarity.register_fake
def _(images: Tensor, kernel_size: int, dilation: int, theta: float) -> Tensor:
    b, _, h, w = images.shape
    return images.new_empty(b, kernel_size * kernel_size - 1, h, w)


# --- pairwise_affinity_loss --------------------------------------------------------------------------------------
@torch.library.custom_op("boxseg::pairwise_affinity_loss", mutates_args=())
def pairwise_affinity_loss(
    mask_logits: Tensor, color_sim: Tensor, img_idx: Tensor, boxes: Tensor, tau: float, dilation: int,
    with_grad: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (loss, count, raw_grad): the mean over qualifying triples, their number (int64), and with `with_grad`
    the unnormalised gradient d(sum of terms)/d logits, computed in the same pass over the pairs and handed to
    autograd's backward, which scales it in place (without it, an empty tensor; backward runs the gradient kernel).
    `with_grad=True` is for eager mode: the hand-over bypasses saved tensors, which AOT autograd cannot trace."""
    ext = _ext(mask_logits.device)
    if with_grad:
        loss_sum, count, raw = ext.pairwise_forward_backward(mask_logits, color_sim, img_idx, boxes, tau, dilation)
    else:
        loss_sum, count = ext.pairwise_forward(mask_logits, color_sim, img_idx, boxes, tau, dilation)
        raw = mask_logits.new_empty(0)
    loss = (loss_sum / count.clamp_min(1)).to(mask_logits.dtype)
    return loss, count, raw


@pairwise_affinity_loss.register_fake
def _(mask_logits: Tensor, color_sim: Tensor, img_idx: Tensor, boxes: Tensor, tau: float, dilation: int,
      with_grad: bool = False):
    raw = mask_logits.new_empty(mask_logits.shape if with_grad else (0,))
    return mask_logits.new_empty(()), mask_logits.new_empty((), dtype=torch.long), raw


@torch.library.custom_op("boxseg::pairwise_affinity_grad", mutates_args=())
def pairwise_affinity_grad(
    mask_logits: Tensor, color_sim: Tensor, img_idx: Tensor, boxes: Tensor, tau: float, dilation: int
) -> Tensor:
    """Unnormalised gradient: sum over qualifying triples of d(-log P_same)/d logit (recomputed, nothing saved)."""
    return _ext(mask_logits.device).pairwise_backward(mask_logits, color_sim, img_idx, boxes, tau, dilation)


@pairwise_affinity_grad.register_fake
def _(mask_logits: Tensor, color_sim: Tensor, img_idx: Tensor, boxes: Tensor, tau: float, dilation: int):
    return torch.empty_like(mask_logits)


def _pairwise_setup(ctx, inputs, output) -> None:
    mask_logits, color_sim, img_idx, boxes, tau, dilation, with_grad = inputs
    ctx.save_for_backward(mask_logits, color_sim, img_idx, boxes, output[1])
    ctx.tau, ctx.dilation = tau, dilation
    # The forward's gradient is consumed (scaled in place) by the first backward; a second backward (retain_graph)
    # recomputes it. It is held as a plain attribute, not saved, so that the in-place scaling trips no version check;
    # it is marked non-differentiable, so it has no grad_fn that could hold ctx in a reference cycle.
    ctx.mark_non_differentiable(output[2])
    ctx.raw = output[2] if with_grad else None
    ctx.set_materialize_grads(False)  # else autograd fills an (N,H,W) zero "gradient" of raw_grad every backward


def _pairwise_backward(ctx, grad_loss: Tensor, grad_count: Tensor | None, grad_raw: Tensor | None):
    mask_logits, color_sim, img_idx, boxes, count = ctx.saved_tensors
    raw, ctx.raw = ctx.raw, None
    grad = None
    if ctx.needs_input_grad[0]:
        if raw is None:
            raw = pairwise_affinity_grad(mask_logits, color_sim, img_idx, boxes, ctx.tau, ctx.dilation)
        if grad_loss is None:
            grad_loss = torch.zeros((), dtype=mask_logits.dtype, device=mask_logits.device)
        grad = raw.mul_((grad_loss / count.clamp_min(1)).to(raw.dtype))  # in place: raw is ours
    return grad, None, None, None, None, None, None


pairwise_affinity_loss.register_autograd(_pairwise_backward, setup_context=_pairwise_setup)


# --- fuse_candidate_masks ----------------------------------------------------------------------------------------
@torch.library.custom_op("boxseg::fuse_candidate_masks", mutates_args=())
def fuse_candidate_masks(
    cand_probs: Tensor, gt_idx: Tensor, box_scores: Tensor, box_ious: Tensor, gt_boxes: Tensor, tau_m: float
) -> tuple[Tensor, Tensor, Tensor]:
    return _ext(cand_probs.device).fuse_masks(cand_probs, gt_idx, box_scores, box_ious, gt_boxes, tau_m)


@fuse_candidate_masks.register_fake
def _(cand_probs: Tensor, gt_idx: Tensor, box_scores: Tensor, box_ious: Tensor, gt_boxes: Tensor, tau_m: float):
    g = gt_boxes.shape[0]
    h, w = cand_probs.shape[1:]
    return (cand_probs.new_empty(g, h, w), cand_probs.new_empty(g),
            cand_probs.new_empty(g, dtype=torch.bool))


# --- batched_nms -------------------------------------------------------------------------------------------------
@torch.library.custom_op("boxseg::batched_nms", mutates_args=())
def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    return _ext(boxes.device).batched_nms(boxes, scores, classes, iou_threshold)


@batched_nms.register_fake
def _(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty(kept, dtype=torch.long)
