"""CondInst: backbone -> FPN P3-P7 -> FCOS head with controller, plus a mask branch and a dynamic mask head.

`forward(images)` returns the dense per-location outputs used by the losses and by the teacher; `inference(images)`
is the separate, export-friendly detection path: decode -> nms_keep -> top-D -> dynamic mask head, every output
of a fixed size (padded), no Python loop over the batch or over instances.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from boxseg import ops
from boxseg.contract import MASK_STRIDE
from boxseg.model.backbone import build_backbone
from boxseg.model.box_ops import clip_boxes, distances_to_boxes
from boxseg.model.config import ModelConfig
from boxseg.model.dynamic_head import dynamic_mask_head
from boxseg.model.fcos_head import FCOSHead
from boxseg.model.fpn import FPN
from boxseg.model.layers import locations_for
from boxseg.model.mask_branch import MaskBranch

MASK_FEAT_STRIDE = 8
MASK_OUT_STRIDE = MASK_STRIDE  # the exported graph's mask grid (boxseg.contract)


@dataclass
class FlatDense:
    """All FPN levels concatenated per image; L = total number of locations (level-major, row-major inside)."""

    cls_logits: torch.Tensor  # (B, L, C)
    box_reg: torch.Tensor  # (B, L, 4) l, t, r, b in pixels
    ctrness: torch.Tensor  # (B, L) logits
    params: torch.Tensor  # (B, L, P)
    locations: torch.Tensor  # (L, 2) image (x, y)
    levels: torch.Tensor  # (L,) int64 FPN level index 0..4 (P3..P7)
    strides: torch.Tensor  # (L,) float
    soi: torch.Tensor  # (L,) size-of-interest normaliser S_l of the location's level

    @property
    def boxes(self) -> torch.Tensor:
        """(B, L, 4) predicted xyxy boxes in input pixels (not clipped)."""
        return distances_to_boxes(self.locations[None], self.box_reg)


@dataclass
class DenseOutput:
    """Per-level dense outputs of `CondInst.forward` (lists indexed by level P3..P7)."""

    cls_logits: list[torch.Tensor]  # (B, C, h, w)
    box_reg: list[torch.Tensor]  # (B, 4, h, w) l, t, r, b in pixels
    ctrness: list[torch.Tensor]  # (B, 1, h, w) logits
    params: list[torch.Tensor]  # (B, P, h, w) controller output
    locations: list[torch.Tensor]  # (h*w, 2) image (x, y) of each location
    strides: tuple[int, ...]
    soi: tuple[float, ...]  # S_l per level (64 .. 1024)
    mask_feats: torch.Tensor  # (B, C_mask, H/8, W/8)
    image_size: tuple[int, int]  # (H, W) of the input batch

    def flat(self) -> FlatDense:
        def cat(maps: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

        locs = torch.cat(self.locations, dim=0)
        # Built from per-level torch.full (not torch.tensor of the sizes) so shapes stay symbolic under export.
        def per_level(values: list[float] | list[int] | range, dtype: torch.dtype) -> torch.Tensor:
            return torch.cat([torch.full((loc.shape[0],), v, dtype=dtype, device=locs.device)
                              for v, loc in zip(values, self.locations)])

        levels = per_level(range(len(self.locations)), torch.int64)
        strides = per_level(list(self.strides), locs.dtype)
        soi = per_level(list(self.soi), locs.dtype)
        return FlatDense(
            cls_logits=cat(self.cls_logits),
            box_reg=cat(self.box_reg),
            ctrness=cat(self.ctrness)[..., 0],
            params=cat(self.params),
            locations=locs,
            levels=levels,
            strides=strides,
            soi=soi,
        )


@dataclass
class Candidates:
    """Pre-NMS top-K per image from `CondInst.decode`; padding/below-threshold entries have score 0."""

    boxes: torch.Tensor  # (B, K, 4) xyxy, clipped to the input
    scores: torch.Tensor  # (B, K)
    classes: torch.Tensor  # (B, K) int64
    loc_idx: torch.Tensor  # (B, K) index into the flattened locations
    params: torch.Tensor  # (B, K, P)
    locations: torch.Tensor  # (B, K, 2)
    soi: torch.Tensor  # (B, K)


@dataclass
class Detections:
    """Fixed-size, padded detections (the exported graph's outputs). Padding rows: score 0, class -1, box 0."""

    boxes: torch.Tensor  # (B, D, 4) xyxy in input pixels
    scores: torch.Tensor  # (B, D)
    classes: torch.Tensor  # (B, D) int64
    masks: torch.Tensor  # (B, D, H/4, W/4) probabilities
    num_dets: torch.Tensor  # (B,) int64


class CondInst(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone, self.load_report = build_backbone(cfg)
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels)
        self.head = FCOSHead(cfg.fpn_channels, cfg.num_classes, cfg.head_convs, cfg.head_norm,
                             cfg.num_dynamic_params, cfg.strides, cfg.prior_prob)
        self.mask_branch = MaskBranch(cfg.fpn_channels, cfg.mask_branch_width, cfg.mask_branch_convs,
                                      cfg.mask_branch_channels, cfg.mask_branch_norm)
        self.register_buffer("pixel_mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ dense (training / teacher) path
    def forward(self, images: torch.Tensor) -> DenseOutput:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"CondInst: images must be float (B,3,H,W) RGB 0..255, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if not torch.jit.is_tracing() and isinstance(h, int) and (h % 32 or w % 32):
            raise ValueError(f"CondInst: image height and width must be multiples of 32, got {h}x{w}")
        x = (images - self.pixel_mean) / self.pixel_std
        feats = self.fpn(self.backbone(x))
        cls, box, ctr, params = self.head(feats)
        locations = [locations_for(f.shape[-2], f.shape[-1], s, f.device, f.dtype)
                     for f, s in zip(feats, self.cfg.strides)]
        return DenseOutput(
            cls_logits=cls, box_reg=box, ctrness=ctr, params=params, locations=locations,
            strides=self.cfg.strides, soi=self.cfg.soi_normalizers, mask_feats=self.mask_branch(feats),
            image_size=(h, w),  # kept symbolic under export (no int())
        )

    def mask_head(self, mask_feats: torch.Tensor, params: torch.Tensor, locations: torch.Tensor,
                  soi: torch.Tensor, img_idx: torch.Tensor) -> torch.Tensor:
        """(N, H/4, W/4) mask logits of N instances (params (N,P), locations (N,2), soi (N,), img_idx (N,))."""
        return dynamic_mask_head(mask_feats, params, locations, soi, img_idx, self.cfg.mask_head_channels,
                                 self.cfg.mask_head_layers, MASK_FEAT_STRIDE, MASK_FEAT_STRIDE // MASK_OUT_STRIDE)

    def class_scores(self, flat: FlatDense) -> torch.Tensor:
        """(B, L, C) box-scores: the IoU-aware class probability (VFL), or sqrt(p_cls * p_ctr) for the vanilla
        FCOS fallback (docs/method.md "Student network", box score)."""
        p = flat.cls_logits.sigmoid()
        if self.cfg.box_score == "fcos_cls_ctr":
            p = (p * flat.ctrness.sigmoid()[..., None]).sqrt()
        return p

    # ------------------------------------------------------------------ inference path
    def decode(self, dense: DenseOutput, score_thr: float | None = None, pre_nms_topk: int | None = None
               ) -> Candidates:
        """Per image, the top-k (location, class) pairs of the flattened scores; those <= score_thr get score 0."""
        thr = self.cfg.score_thresh if score_thr is None else score_thr
        k_max = self.cfg.pre_nms_topk if pre_nms_topk is None else pre_nms_topk
        flat = dense.flat()
        scores = self.class_scores(flat)
        b, n_loc, n_cls = scores.shape
        k = min(k_max, n_loc * n_cls)
        top_s, top_i = scores.reshape(b, n_loc * n_cls).topk(k, dim=1)
        loc_idx = torch.div(top_i, n_cls, rounding_mode="floor")
        classes = top_i - loc_idx * n_cls
        boxes = torch.gather(flat.boxes, 1, loc_idx[..., None].expand(b, k, 4))
        params = torch.gather(flat.params, 1, loc_idx[..., None].expand(b, k, flat.params.shape[-1]))
        h, w = dense.image_size
        return Candidates(
            boxes=clip_boxes(boxes, h, w),
            scores=torch.where(top_s > thr, top_s, torch.zeros_like(top_s)),
            classes=classes,
            loc_idx=loc_idx,
            params=params,
            locations=flat.locations[loc_idx],
            soi=flat.soi[loc_idx],
        )

    def nms_keep(self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                 iou_threshold: float | None = None) -> torch.Tensor:
        """(B, K) bool: class-aware NMS per image; candidates with score 0 are padding and never kept.

        One `boxseg.ops.batched_nms` call for the whole batch (groups = image * C + class). The ONNX exporter
        replaces this method with NonMaxSuppression.
        """
        thr = self.cfg.nms_thresh if iou_threshold is None else iou_threshold
        b, k = scores.shape
        groups = torch.arange(b, device=scores.device)[:, None] * self.cfg.num_classes + classes
        cand = torch.nonzero(scores.reshape(-1) > 0).squeeze(1)
        kept = ops.batched_nms(boxes.reshape(-1, 4)[cand], scores.reshape(-1)[cand], groups.reshape(-1)[cand], thr)
        keep = torch.zeros(b * k, dtype=torch.bool, device=scores.device)
        keep[cand[kept]] = True
        return keep.reshape(b, k)

    @torch.no_grad()
    def inference(self, images: torch.Tensor, score_thr: float | None = None, pre_nms_topk: int | None = None,
                  nms_thr: float | None = None, max_dets: int | None = None) -> Detections:
        dense = self(images)
        cand = self.decode(dense, score_thr, pre_nms_topk)
        keep = self.nms_keep(cand.boxes, cand.scores, cand.classes, nms_thr)
        return self.select_and_segment(dense, cand, keep, max_dets)

    def select_and_segment(self, dense: DenseOutput, cand: Candidates, keep: torch.Tensor,
                           max_dets: int | None = None) -> Detections:
        """Top-D kept candidates by score (padded to exactly D) and their masks from the dynamic head."""
        d = self.cfg.max_dets if max_dets is None else max_dets
        b, k = cand.scores.shape
        ranked = torch.where(keep & (cand.scores > 0), cand.scores, torch.full_like(cand.scores, -1.0))
        d_eff = min(d, k)
        top_s, idx = ranked.topk(d_eff, dim=1)
        valid = top_s > 0

        def take(t: torch.Tensor) -> torch.Tensor:
            if t.dim() == 2:
                return torch.gather(t, 1, idx)
            return torch.gather(t, 1, idx[..., None].expand(b, d_eff, t.shape[-1]))

        boxes = take(cand.boxes) * valid[..., None]
        scores = torch.where(valid, top_s, torch.zeros_like(top_s))
        classes = torch.where(valid, take(cand.classes), torch.full_like(idx, -1))
        img_idx = torch.arange(b, device=idx.device)[:, None].expand(b, d_eff).reshape(-1)  # exports as Expand
        logits = self.mask_head(dense.mask_feats, take(cand.params).reshape(b * d_eff, -1),
                                take(cand.locations).reshape(b * d_eff, 2), take(cand.soi[..., None]).reshape(-1),
                                img_idx)
        masks = logits.sigmoid().reshape(b, d_eff, *logits.shape[-2:]) * valid[..., None, None]
        if d_eff < d:  # fewer candidates than detection slots (tiny inputs): pad to the fixed size
            pad = d - d_eff
            boxes = torch.cat([boxes, boxes.new_zeros(b, pad, 4)], 1)
            scores = torch.cat([scores, scores.new_zeros(b, pad)], 1)
            classes = torch.cat([classes, classes.new_full((b, pad), -1)], 1)
            masks = torch.cat([masks, masks.new_zeros(b, pad, *masks.shape[-2:])], 1)
        return Detections(boxes=boxes, scores=scores, classes=classes, masks=masks,
                          num_dets=valid.sum(1).to(torch.int64))
