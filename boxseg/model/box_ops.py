"""Box helpers the model and losses share. Pairwise IoU and NMS live in `boxseg.ops`; these are the elementwise
(aligned) forms the FCOS losses need."""

from __future__ import annotations

import torch


def distances_to_boxes(locations: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """(..., 2) points (x, y) and (..., 4) distances (l, t, r, b) -> (..., 4) xyxy boxes."""
    x, y = locations[..., 0], locations[..., 1]
    return torch.stack([x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]], dim=-1)


def boxes_to_distances(locations: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(..., 2) points and (..., 4) xyxy boxes -> (..., 4) distances (l, t, r, b) from each point to the sides."""
    x, y = locations[..., 0], locations[..., 1]
    return torch.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clamp (..., 4) xyxy boxes to [0, width] x [0, height] (sizes may be symbolic under export)."""
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def aligned_iou_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and generalised IoU of matching rows of (..., 4) xyxy boxes a and b."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    iou = inter / union.clamp(min=eps)
    enc_lt = torch.minimum(a[..., :2], b[..., :2])
    enc_rb = torch.maximum(a[..., 2:], b[..., 2:])
    enc_wh = (enc_rb - enc_lt).clamp(min=0)
    enclosing = enc_wh[..., 0] * enc_wh[..., 1]
    giou = iou - (enclosing - union) / enclosing.clamp(min=eps)
    return iou, giou
