"""FCOS detection losses (docs/method.md "Student network"): location -> GT assignment, varifocal or focal
classification, GIoU box regression and centerness BCE, normalised as FCOS (by the number of positives, and the box
loss by the sum of centerness targets), averaged across processes when running distributed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from boxseg.model.box_ops import aligned_iou_giou, boxes_to_distances, distances_to_boxes


@dataclass
class Assignment:
    """Per image and location: the assigned GT (-1 for background) and its regression target."""

    gt_idx: torch.Tensor  # (B, L) int64, index into that image's targets, -1 = negative
    labels: torch.Tensor  # (B, L) int64 class, -1 = negative
    reg_targets: torch.Tensor  # (B, L, 4) l, t, r, b in pixels (0 for negatives)
    gt_boxes: torch.Tensor  # (B, L, 4) the assigned GT box (0 for negatives)

    @property
    def positive(self) -> torch.Tensor:
        return self.gt_idx >= 0


def level_ranges(sizes_of_interest: tuple[float, ...], levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) regression range of each location from its level: [0,64], [64,128], ..., [512, inf]."""
    bounds = [0.0, *sizes_of_interest, float("inf")]
    lo = torch.tensor(bounds[:-1], device=levels.device)[levels]
    hi = torch.tensor(bounds[1:], device=levels.device)[levels]
    return lo, hi


def assign_image(locations: torch.Tensor, strides: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                 boxes: torch.Tensor, center_radius: float) -> torch.Tensor:
    """GT index of every location of one image (-1 = negative).

    A location is a candidate for a GT when it lies inside the GT's centre region (radius * stride around the box
    centre, clipped to the box; the whole box when radius <= 0) and the largest of its distances to the box sides
    falls in its level's range. Among several candidate GTs the smallest-area one wins (FCOS).
    """
    n_loc, n_gt = locations.shape[0], boxes.shape[0]
    if n_gt == 0:
        return torch.full((n_loc,), -1, dtype=torch.long, device=locations.device)
    b = boxes.to(locations.dtype)
    ltrb = boxes_to_distances(locations[:, None, :], b[None, :, :])  # (L, G, 4)
    if center_radius > 0:
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        r = strides[:, None] * center_radius  # (L, 1)
        region = torch.stack([
            torch.maximum(cx[None] - r, b[None, :, 0]), torch.maximum(cy[None] - r, b[None, :, 1]),
            torch.minimum(cx[None] + r, b[None, :, 2]), torch.minimum(cy[None] + r, b[None, :, 3]),
        ], dim=-1)  # (L, G, 4)
        inside = boxes_to_distances(locations[:, None, :], region).min(-1).values > 0
    else:
        inside = ltrb.min(-1).values > 0
    max_dist = ltrb.max(-1).values
    in_range = (max_dist >= lo[:, None]) & (max_dist <= hi[:, None])
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None].expand(n_loc, n_gt)
    area = torch.where(inside & in_range, area, torch.full_like(area, float("inf")))
    min_area, idx = area.min(dim=1)
    return torch.where(torch.isfinite(min_area), idx, torch.full_like(idx, -1))


def assign_targets(locations: torch.Tensor, strides: torch.Tensor, levels: torch.Tensor,
                   targets: list[dict[str, torch.Tensor]], sizes_of_interest: tuple[float, ...],
                   center_radius: float) -> Assignment:
    lo, hi = level_ranges(sizes_of_interest, levels)
    gt_idx, labels, regs, gtb = [], [], [], []
    for t in targets:  # one small vectorised assignment per image (GT counts differ)
        boxes = t["boxes"].to(locations.device, locations.dtype).reshape(-1, 4)
        classes = t["classes"].to(locations.device).reshape(-1).long()
        idx = assign_image(locations, strides, lo, hi, boxes, center_radius)
        pos = idx >= 0
        safe = idx.clamp(min=0)
        if boxes.shape[0] == 0:
            box = torch.zeros(locations.shape[0], 4, dtype=locations.dtype, device=locations.device)
            lab = torch.full_like(idx, -1)
        else:
            box = boxes[safe] * pos[:, None]
            lab = torch.where(pos, classes[safe], torch.full_like(idx, -1))
        gt_idx.append(idx)
        labels.append(lab)
        gtb.append(box)
        regs.append(boxes_to_distances(locations, box) * pos[:, None])
    return Assignment(torch.stack(gt_idx), torch.stack(labels), torch.stack(regs), torch.stack(gtb))


def centerness_target(reg: torch.Tensor) -> torch.Tensor:
    """sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) for (..., 4) positive distances."""
    lr, tb = reg[..., 0::2], reg[..., 1::2]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (
        tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()


def varifocal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0
                   ) -> torch.Tensor:
    """Elementwise VFL (VarifocalNet): -q*(q log p + (1-q) log(1-p)) where q > 0, -alpha p^gamma log(1-p) where
    q = 0."""
    p = logits.sigmoid()
    weight = torch.where(target > 0, target, alpha * p.detach().pow(gamma))
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                       ) -> torch.Tensor:
    """Elementwise focal loss of RetinaNet/FCOS for binary targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return a_t * (1 - p_t).pow(gamma) * ce


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise 1 - GIoU of matching (..., 4) xyxy boxes."""
    return 1.0 - aligned_iou_giou(pred, target)[1]


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over processes (normalisers must agree across GPUs); identity when not distributed."""
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


def fcos_losses(cls_logits: torch.Tensor, box_reg: torch.Tensor, ctrness: torch.Tensor, locations: torch.Tensor,
                assign: Assignment, box_score: str = "vfl", vfl_alpha: float = 0.75, vfl_gamma: float = 2.0,
                focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """cls_logits (B,L,C), box_reg (B,L,4) distances in pixels, ctrness (B,L) logits, locations (L,2).

    Returns unweighted loss_cls, loss_box, loss_ctr. VFL targets are the IoU of the (detached) predicted box
    with the GT box at the GT class; focal loss (box_score="fcos_cls_ctr") uses 1.
    """
    pos = assign.positive
    num_pos = reduce_mean(pos.sum().to(cls_logits.dtype)).clamp(min=1.0)
    pred_boxes = distances_to_boxes(locations[None], box_reg)
    iou, _ = aligned_iou_giou(pred_boxes.detach(), assign.gt_boxes)
    onehot = torch.zeros_like(cls_logits)
    lab = assign.labels.clamp(min=0)
    if box_score == "vfl":
        q = torch.where(pos, iou.clamp(min=0), torch.zeros_like(iou))
        onehot.scatter_(2, lab[..., None], q[..., None])
        loss_cls = varifocal_loss(cls_logits, onehot, vfl_alpha, vfl_gamma).sum() / num_pos
    else:
        onehot.scatter_(2, lab[..., None], pos[..., None].to(onehot.dtype))
        loss_cls = sigmoid_focal_loss(cls_logits, onehot, focal_alpha, focal_gamma).sum() / num_pos

    ctr_t = centerness_target(assign.reg_targets[pos])
    # Every process must reach the same all-reduces, with or without positives of its own.
    ctr_norm = reduce_mean(ctr_t.sum().detach()).clamp(min=1e-6)
    if bool(pos.any()):
        loss_box = (giou_loss(pred_boxes[pos], assign.gt_boxes[pos]) * ctr_t).sum() / ctr_norm
        loss_ctr = F.binary_cross_entropy_with_logits(ctrness[pos], ctr_t, reduction="sum") / num_pos
    else:  # keep the graph (and DDP's view of every parameter) with exact zeros
        loss_box = box_reg.sum() * 0.0
        loss_ctr = ctrness.sum() * 0.0
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}
