"""Positive locations kept for the mask losses (docs/method.md "Student network"): at most `max_per_image` per
image, the budget split evenly across the image's GTs, each GT keeping its top locations by score x centerness."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from boxseg.train.losses.fcos import Assignment

from boxseg.model.condinst import FlatDense


@dataclass
class Proposals:
    """N selected positive locations of the whole batch."""

    img_idx: torch.Tensor  # (N,) image in the batch
    loc_idx: torch.Tensor  # (N,) index into the flattened locations
    gt_idx: torch.Tensor  # (N,) index of the assigned GT within its image's targets
    levels: torch.Tensor  # (N,) FPN level
    locations: torch.Tensor  # (N, 2)
    soi: torch.Tensor  # (N,)
    params: torch.Tensor  # (N, P) controller output (with grad)

    def __len__(self) -> int:
        return int(self.img_idx.shape[0])


def _top_per_group(groups: torch.Tensor, scores: torch.Tensor, per_group: int) -> torch.Tensor:
    """Indices of the top `per_group` scores within each group id (no loop over groups)."""
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_group = torch.sort(groups[by_score], stable=True).indices
    order = by_score[by_group]  # grouped by id, best first inside each group
    g = groups[order]
    _, counts = torch.unique_consecutive(g, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(g.shape[0], device=g.device) - starts
    return order[rank < per_group]


def select_proposals(flat: FlatDense, assign: Assignment, max_per_image: int = 64) -> Proposals:
    """Choose the mask-loss positives; ranking uses detached sigmoid(class logit of the GT class) * centerness."""
    pos = assign.positive
    lab = assign.labels.clamp(min=0)
    with torch.no_grad():
        cls_p = torch.gather(flat.cls_logits, 2, lab[..., None])[..., 0].sigmoid()
        rank_score = cls_p * flat.ctrness.sigmoid()
    img_list, loc_list = [], []
    for b in range(pos.shape[0]):  # per image: the GT count sets the per-GT budget
        locs = torch.nonzero(pos[b]).squeeze(1)
        if locs.numel() == 0:
            continue
        gts = assign.gt_idx[b, locs]
        scores = rank_score[b, locs]
        n_gt = int(torch.unique(gts).numel())
        keep = _top_per_group(gts, scores, max(max_per_image // n_gt, 1))
        if keep.numel() > max_per_image:  # more GTs than the budget: one each, then the best overall
            keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices[:max_per_image]]
        locs = locs[keep]
        loc_list.append(locs)
        img_list.append(torch.full_like(locs, b))
    dev = flat.locations.device
    img = torch.cat(img_list) if img_list else torch.zeros(0, dtype=torch.long, device=dev)
    loc = torch.cat(loc_list) if loc_list else torch.zeros(0, dtype=torch.long, device=dev)
    return Proposals(
        img_idx=img,
        loc_idx=loc,
        gt_idx=assign.gt_idx[img, loc],
        levels=flat.levels[loc],
        locations=flat.locations[loc],
        soi=flat.soi[loc],
        params=flat.params[img, loc],
    )
