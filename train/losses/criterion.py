"""All student losses for one batch: FCOS detection, then mask losses on the selected proposals.

`Criterion(loss_cfg, model_cfg)(dense, model, batch, iteration) -> {name: weighted scalar}`; the trainer sums the
values. Mask terms: BoxInst projection + pairwise ("boxinst") or Dice on GT masks ("condinst"), plus the teacher's
pseudo masks when the targets carry them (through the replaceable `pseudo_loss_fn`).
"""

from __future__ import annotations

from typing import Any

import torch
from boxseg.train.losses.boxinst import boxinst_losses, image_color_similarity, valid_region
from boxseg.train.losses.config import LossConfig
from boxseg.train.losses.dice import weighted_dice_loss
from boxseg.train.losses.fcos import assign_targets, fcos_losses
from boxseg.train.losses.mask_sup import PseudoMaskLoss, QualityMaskLoss, downsample_masks, gt_mask_loss
from boxseg.train.losses.proposals import Proposals, select_proposals
from boxseg.train.profile import stage
from boxseg.train.schedule import linear_warmup
from torch import nn

from boxseg.model.condinst import MASK_OUT_STRIDE, DenseOutput
from boxseg.model.config import ModelConfig


class Criterion:
    def __init__(self, loss_cfg: LossConfig, model_cfg: ModelConfig, pseudo_loss_fn: PseudoMaskLoss | None = None
                 ) -> None:
        loss_cfg.validate()
        if loss_cfg.box_score is not None and loss_cfg.box_score != model_cfg.box_score:
            raise ValueError(f"LossConfig.box_score {loss_cfg.box_score!r} disagrees with ModelConfig.box_score "
                             f"{model_cfg.box_score!r}; set one of them (None follows the model)")
        self.cfg = loss_cfg
        self.model_cfg = model_cfg
        self.box_score = model_cfg.box_score
        # The seam for teacher pseudo masks: replace with any callable of the PseudoMaskLoss signature.
        self.pseudo_loss_fn: PseudoMaskLoss = pseudo_loss_fn or QualityMaskLoss(loss_cfg.mask_sup)

    def __call__(self, dense: DenseOutput, model: nn.Module, batch: dict[str, Any], iteration: int
                 ) -> dict[str, torch.Tensor]:
        cfg, mcfg = self.cfg, self.model_cfg
        targets = batch["targets"]
        if len(targets) != dense.mask_feats.shape[0]:
            raise ValueError(f"Criterion: batch['targets'] has {len(targets)} entries for "
                             f"{dense.mask_feats.shape[0]} images")
        flat = dense.flat()
        with stage("fcos_assign"):
            assign = assign_targets(flat.locations, flat.strides, flat.levels, targets, mcfg.sizes_of_interest,
                                    mcfg.center_sampling_radius)
        with stage("loss_fcos"):
            det = fcos_losses(flat.cls_logits, flat.box_reg, flat.ctrness, flat.locations, assign, self.box_score,
                              cfg.vfl_alpha, cfg.vfl_gamma, cfg.focal_alpha, cfg.focal_gamma)
        losses = {
            "loss_cls": cfg.cls_weight * det["loss_cls"],
            "loss_box": cfg.box_weight * det["loss_box"],
            "loss_ctr": cfg.ctr_weight * det["loss_ctr"],
        }

        with stage("mask_head"):
            props = select_proposals(flat, assign, cfg.max_proposals)
            core = getattr(model, "module", model)  # unwrap DDP: the dynamic head has no weights of its own
            mask_logits = core.mask_head(dense.mask_feats, props.params, props.locations, props.soi, props.img_idx)
        # Exact zero that still reaches the mask branch and the controller, so an empty batch back-propagates.
        anchor = dense.mask_feats.sum() * 0.0 + flat.params.sum() * 0.0
        mask_logits = mask_logits + anchor
        gt_boxes = self._proposal_boxes(targets, props, flat.locations)

        if cfg.mask_loss == "boxinst":
            losses.update(self._boxinst(mask_logits, gt_boxes, props, batch, iteration))
        else:
            with stage("loss_gt_mask"):
                losses["loss_mask"] = cfg.gt_mask_weight * self._gt_masks(mask_logits, props, targets,
                                                                          cfg.label_quality_weight)
        if any("pseudo_masks" in t for t in targets):
            with stage("loss_pseudo_mask"):
                losses.update(self.mask_supervision(mask_logits, props, targets, iteration))
        return losses

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _proposal_boxes(targets: list[dict[str, torch.Tensor]], props: Proposals, like: torch.Tensor
                        ) -> torch.Tensor:
        """(N, 4) image-frame GT box of every proposal."""
        boxes = [t["boxes"].to(like.device, like.dtype).reshape(-1, 4) for t in targets]
        counts = torch.tensor([b.shape[0] for b in boxes], device=like.device)
        offsets = torch.cumsum(counts, 0) - counts
        all_boxes = torch.cat(boxes) if boxes else like.new_zeros(0, 4)
        return all_boxes[offsets[props.img_idx] + props.gt_idx] if len(props) else like.new_zeros(0, 4)

    def _boxinst(self, mask_logits: torch.Tensor, gt_boxes: torch.Tensor, props: Proposals,
                 batch: dict[str, Any], iteration: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        images = batch.get("color_images", batch["images"])  # pre-photometric pixels when the method keeps them
        h4, w4 = mask_logits.shape[-2:]
        sizes = [(int(h), int(w)) for h, w in batch.get("image_sizes", [images.shape[-2:]] * images.shape[0])]
        orig = batch.get("orig_sizes")
        # The bottom rows to drop are counted in original-image pixels, so scale them to the input frame.
        cut = [cfg.bottom_pixels_removed * (sizes[i][0] / orig[i][0] if orig else 1.0) for i in range(len(sizes))]
        with torch.no_grad(), stage("color_similarity"):
            valid = valid_region(sizes, (h4, w4), MASK_OUT_STRIDE, cut, images.device)
            sim = image_color_similarity(images, valid, MASK_OUT_STRIDE, cfg.pairwise_kernel, cfg.pairwise_dilation,
                                         cfg.pairwise_theta)
        loss_proj, loss_pair = boxinst_losses(mask_logits, gt_boxes / MASK_OUT_STRIDE, props.img_idx, sim,
                                              cfg.pairwise_color_thresh, cfg.pairwise_dilation)
        warm = linear_warmup(iteration, cfg.pairwise_warmup_iters)
        return {"loss_proj": cfg.proj_weight * loss_proj, "loss_pair": cfg.pairwise_weight * warm * loss_pair}

    @staticmethod
    def _gt_masks(mask_logits: torch.Tensor, props: Proposals, targets: list[dict[str, torch.Tensor]],
                  quality_weight: bool = True) -> torch.Tensor:
        """Dice on the targets' masks. With `boxseg label` masks (targets carry `mask_valid`, `mask_quality`):
        sum_p w_g(p) * Dice_p / N over the samples p whose object has a valid label with w > 0 (BoxSeg Eq. 1, the
        label's w in place of the teacher's; N counts those samples), so an invalid or weight-0 object adds
        nothing, to the sum or to N. `quality_weight=False` keeps w = 1 for every valid label."""
        if len(props) == 0:
            return mask_logits.sum() * 0.0
        h4, w4 = mask_logits.shape[-2:]
        per_image = []
        for i, t in enumerate(targets):
            if "masks" not in t:
                raise ValueError(f"Criterion: mask_loss='condinst' needs targets[{i}]['masks'] (n,H,W) bool GT "
                                 "masks (load the dataset with masks)")
            m = downsample_masks(t["masks"].to(mask_logits.device), MASK_OUT_STRIDE)
            if m.shape[0] and m.shape[-2:] != (h4, w4):
                raise ValueError(f"Criterion: targets[{i}]['masks'] must be at the padded batch size "
                                 f"{(h4 * MASK_OUT_STRIDE, w4 * MASK_OUT_STRIDE)}, got {tuple(t['masks'].shape[-2:])}")
            per_image.append(m)
        counts = torch.tensor([m.shape[0] for m in per_image], device=mask_logits.device)
        offsets = torch.cumsum(counts, 0) - counts
        all_masks = torch.cat(per_image)
        gt_idx = offsets[props.img_idx] + props.gt_idx
        if not any("mask_valid" in t for t in targets):
            return gt_mask_loss(mask_logits, all_masks[gt_idx])  # plain GT masks (COCO): unchanged
        dev = mask_logits.device
        valid = torch.cat([t["mask_valid"].to(dev).bool().reshape(-1) if "mask_valid" in t
                           else torch.ones(m.shape[0], dtype=torch.bool, device=dev)
                           for t, m in zip(targets, per_image)])
        weight = torch.cat([t["mask_quality"].to(dev).float().reshape(-1) if quality_weight and "mask_quality" in t
                            else torch.ones(m.shape[0], device=dev) for t, m in zip(targets, per_image)])
        keep = valid[gt_idx] & (weight[gt_idx] > 0)
        return weighted_dice_loss(mask_logits.sigmoid(), all_masks[gt_idx], weight[gt_idx], keep)

    def mask_supervision(self, mask_logits: torch.Tensor, props: Proposals, targets: list[dict[str, torch.Tensor]],
                         iteration: int) -> dict[str, torch.Tensor]:
        """Teacher pseudo masks -> `pseudo_loss_fn` with the batch's pseudo labels concatenated. Images without
        `pseudo_masks` count as having no valid pseudo mask."""
        h4, w4 = mask_logits.shape[-2:]
        dev = mask_logits.device
        masks, weights, valid, boxes, tutor = [], [], [], [], []
        for t in targets:
            n = t["boxes"].reshape(-1, 4).shape[0]
            boxes.append(t["boxes"].to(dev).reshape(-1, 4).float() / MASK_OUT_STRIDE)
            tutor.append(t.get("is_tutor", torch.zeros(n, dtype=torch.bool)).to(dev).bool().reshape(n))
            if "pseudo_masks" in t:
                masks.append(t["pseudo_masks"].to(dev).float().reshape(n, h4, w4))
                weights.append(t.get("pseudo_weights", torch.ones(n)).to(dev).float().reshape(n))
                valid.append(t.get("pseudo_valid", torch.ones(n, dtype=torch.bool)).to(dev).bool().reshape(n))
            else:
                masks.append(torch.zeros(n, h4, w4, device=dev))
                weights.append(torch.zeros(n, device=dev))
                valid.append(torch.zeros(n, dtype=torch.bool, device=dev))
        counts = torch.tensor([b.shape[0] for b in boxes], device=dev)
        offsets = torch.cumsum(counts, 0) - counts
        gt_idx = offsets[props.img_idx] + props.gt_idx
        return self.pseudo_loss_fn(mask_logits, gt_idx, torch.cat(masks), torch.cat(weights), torch.cat(valid),
                                   torch.cat(boxes), iteration=iteration, tutor=torch.cat(tutor))
