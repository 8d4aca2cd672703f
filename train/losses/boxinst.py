"""BoxInst box-supervised mask losses (docs/method.md "Box-supervised mask loss"): projection Dice and the
colour-affinity pairwise term.

Masks live on the stride-4 grid of the padded batch; a grid pixel (y, x) is centred at image (4x+2, 4y+2), and a
box in grid units is the image box divided by 4 (the `boxseg.ops` convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from boxseg.train.losses.dice import dice_loss
from boxseg.train.profile import stage

from boxseg import ops


def projection_loss(mask_probs: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
    """Per instance Dice(proj_x(m), proj_x(b)) + Dice(proj_y(m), proj_y(b)); (N, h, w) -> (N,)."""
    b = box_masks.to(mask_probs.dtype)
    loss_x = dice_loss(mask_probs.amax(dim=1), b.amax(dim=1))  # max over y: one value per column
    loss_y = dice_loss(mask_probs.amax(dim=2), b.amax(dim=2))  # max over x: one value per row
    return loss_x + loss_y


def valid_region(image_sizes: list[tuple[int, int]], grid_hw: tuple[int, int], stride: int,
                 bottom_removed: list[float] | None = None, device: torch.device | None = None) -> torch.Tensor:
    """(B, h, w) bool: grid pixels whose centre lies inside the un-padded image, above the removed bottom rows."""
    h, w = grid_hw
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    rows = []
    for i, (ih, iw) in enumerate(image_sizes):
        cut = 0.0 if bottom_removed is None else bottom_removed[i]
        rows.append((ys[:, None] <= ih - cut) & (xs[None, :] <= iw))
    return torch.stack(rows)


def pair_validity(valid: torch.Tensor, kernel_size: int, dilation: int) -> torch.Tensor:
    """(B, h, w) bool -> (B, k*k-1, h, w): both the pixel and its neighbour (channel order of
    `ops.color_similarity`) lie in the valid region."""
    r = (kernel_size // 2) * dilation
    padded = F.pad(valid, (r, r, r, r), value=False)
    h, w = valid.shape[-2:]
    chans = []
    for dy in range(-r, r + 1, dilation):
        for dx in range(-r, r + 1, dilation):
            if dy == 0 and dx == 0:
                continue
            chans.append(valid & padded[:, r + dy : r + dy + h, r + dx : r + dx + w])
    return torch.stack(chans, dim=1)


def image_color_similarity(images: torch.Tensor, valid: torch.Tensor, stride: int, kernel_size: int = 3,
                           dilation: int = 2, theta: float = 2.0) -> torch.Tensor:
    """(B,3,H,W) RGB 0..255 -> (B,k*k-1,H/stride,W/stride) colour similarity of the image average-pooled by
    `stride`, with every pair touching padding (or the removed bottom rows) set to 0."""
    pooled = F.avg_pool2d(images.float(), kernel_size=stride, stride=stride)
    sim = ops.color_similarity(pooled, kernel_size, dilation, theta)
    return sim * pair_validity(valid, kernel_size, dilation).to(sim.dtype)


def boxinst_losses(mask_logits: torch.Tensor, gt_boxes_grid: torch.Tensor, img_idx: torch.Tensor,
                   color_sim: torch.Tensor, color_thresh: float = 0.3, dilation: int = 2
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_proj averaged over instances, L_pair) for mask_logits (N,h,w) with their GT boxes (N,4) in grid units.
    Both are 0 with a gradient path when N = 0."""
    n, h, w = mask_logits.shape
    if n == 0:
        zero = mask_logits.sum() * 0.0
        return zero, zero.clone()
    with stage("loss_projection"):
        box_masks = ops.box_masks(gt_boxes_grid, h, w)
        loss_proj = projection_loss(mask_logits.sigmoid(), box_masks).mean()
    with stage("loss_pairwise"):
        loss_pair = ops.pairwise_affinity_loss(mask_logits, color_sim, img_idx, gt_boxes_grid, color_thresh,
                                               dilation)
    return loss_proj, loss_pair
