"""Losses: hand-computed values (docs/method.md "Unit-test checks" item 8, VFL, GIoU, Dice), FCOS assignment,
proposal selection, the Criterion on edge cases, and a short overfit of the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from boxseg.train.losses import Criterion, LossConfig
from boxseg.train.losses.boxinst import (
    boxinst_losses,
    image_color_similarity,
    pair_validity,
    projection_loss,
    valid_region,
)
from boxseg.train.losses.dice import dice_loss, weighted_dice_loss
from boxseg.train.losses.fcos import (
    Assignment,
    assign_image,
    centerness_target,
    giou_loss,
    level_ranges,
    sigmoid_focal_loss,
    varifocal_loss,
)
from boxseg.train.losses.proposals import select_proposals

from boxseg import ops
from boxseg.model import CondInst, ModelConfig

LN2 = math.log(2.0)


# ---------------------------------------- docs/method.md "Unit-test checks" item 8 (BoxInst losses)
def test_projection_loss_is_zero_when_the_mask_is_the_box_mask() -> None:
    boxes = torch.tensor([[2.0, 3.0, 9.0, 7.0], [0.0, 0.0, 16.0, 12.0], [5.2, 1.1, 6.9, 10.4]])
    box_masks = ops.box_masks(boxes, 12, 16).float()
    assert float(projection_loss(box_masks, box_masks).abs().max()) < 1e-4
    # the same through the logits path: saturated logits equal to the box mask
    logits = (box_masks * 2 - 1) * 30
    sim = torch.zeros(1, 8, 12, 16)
    proj, pair = boxinst_losses(logits, boxes, torch.zeros(3, dtype=torch.long), sim)
    assert float(proj.detach()) < 1e-4 and float(pair.detach()) == 0.0
    # and a wrong mask is penalised
    assert float(projection_loss(torch.zeros(3, 12, 16) + 0.5, box_masks).min()) > 0.05


def test_pairwise_loss_is_zero_without_similar_neighbours() -> None:
    gen = torch.Generator().manual_seed(0)
    # 8x8-pixel tiles (2x2 grid pixels) coloured (row + 2 * col) mod 5: every dilation-2 neighbour, straight or
    # diagonal, lies in a tile of another, far-apart colour.
    base = torch.tensor([[250.0, 10.0, 10.0], [10.0, 250.0, 10.0], [10.0, 10.0, 250.0], [250.0, 250.0, 10.0],
                         [10.0, 10.0, 10.0]])
    idx = (torch.arange(24)[:, None] // 8 + torch.arange(24)[None, :] // 8 * 2) % 5
    image = base[idx].permute(2, 0, 1)[None]  # (1,3,24,24) -> a 6x6 mask grid
    valid = valid_region([(24, 24)], (6, 6), 4, device=image.device)
    sim = image_color_similarity(image, valid, 4)
    assert float(sim.max()) < 0.3
    logits = torch.randn(2, 6, 6, generator=gen, requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [1.0, 1.0, 5.0, 4.0]])
    _, pair = boxinst_losses(logits, boxes, torch.zeros(2, dtype=torch.long), sim, 0.3, 2)
    assert float(pair.detach()) == 0.0
    # a flat-coloured image makes every in-box edge count: the loss is -log P_same > 0
    flat = torch.full((1, 3, 24, 24), 128.0)
    _, pair_flat = boxinst_losses(logits, boxes, torch.zeros(2, dtype=torch.long),
                                  image_color_similarity(flat, valid, 4), 0.3, 2)
    assert float(pair_flat.detach()) > 0.1


def test_padding_is_excluded_from_pairwise_edges() -> None:
    valid = valid_region([(16, 24)], (8, 8), 4)  # an image 16 px tall padded to 32
    assert bool(valid[0, :4, :6].all()) and not bool(valid[0, 4:].any()) and not bool(valid[0, :, 6:].any())
    pv = pair_validity(valid, 3, 2)
    # pixel (3, 0) is valid, but its neighbour below (dy=+2 -> channel 6) lies in the padding
    assert bool(valid[0, 3, 0]) and not bool(pv[0, 6, 3, 0]) and bool(pv[0, 1, 3, 2])
    cut = valid_region([(32, 32)], (8, 8), 4, bottom_removed=[10.0])
    assert int(cut[0].all(1).sum()) == 6  # rows centred at 2..22 stay (<= 32 - 10), the last two go


# ---------------------------------------------------------------- detection losses on hand-computed cases
def test_varifocal_loss_hand_values() -> None:
    logits = torch.zeros(3)
    target = torch.tensor([0.8, 0.0, 1.0])
    loss = varifocal_loss(logits, target, alpha=0.75, gamma=2.0)
    expected = torch.tensor([0.8 * LN2, 0.75 * 0.25 * LN2, LN2])
    torch.testing.assert_close(loss, expected)
    # a confident correct negative costs almost nothing; a confident wrong one a lot
    lo = varifocal_loss(torch.tensor([-5.0, 5.0]), torch.zeros(2))
    assert float(lo[0]) < 1e-4
    assert float(lo[1]) > 1.0


def test_focal_loss_hand_values() -> None:
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), alpha=0.25, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2]))


def test_giou_loss_hand_values() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    gt = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 3.0, 1.0]])
    # IoU 1/7, enclosing 9, union 7 -> GIoU = 1/7 - 2/9; identical -> 0; disjoint: IoU 0, enclosing 3, union 2
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 0.0, 1 + 1 / 3])
    torch.testing.assert_close(giou_loss(pred, gt), expected)


def test_centerness_target_hand_value() -> None:
    reg = torch.tensor([[10.0, 5.0, 30.0, 5.0], [4.0, 4.0, 4.0, 4.0]])
    torch.testing.assert_close(centerness_target(reg), torch.tensor([math.sqrt(10 / 30), 1.0]))


def _locations(points: list[tuple[float, float]], stride: float = 8.0, level: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    locs = torch.tensor(points)
    n = len(points)
    lo, hi = level_ranges((64.0, 128.0, 256.0, 512.0), torch.full((n,), level))
    return locs, torch.full((n,), stride), lo, hi


def test_assignment_prefers_the_smallest_gt() -> None:
    big = [0.0, 0.0, 60.0, 60.0]
    small = [20.0, 20.0, 40.0, 40.0]
    locs, strides, lo, hi = _locations([(30.0, 30.0), (5.0, 5.0)])
    idx = assign_image(locs, strides, lo, hi, torch.tensor([big, small]), center_radius=0.0)
    assert idx.tolist() == [1, 0]  # inside both -> the small one; only in the big one -> the big one
    idx = assign_image(locs, strides, lo, hi, torch.tensor([small, big]), center_radius=0.0)
    assert idx.tolist() == [0, 1]


def test_assignment_centre_sampling_and_level_ranges() -> None:
    box = torch.tensor([[0.0, 0.0, 100.0, 40.0]])  # centre (50, 20)
    locs, strides, lo, hi = _locations([(50.0, 20.0), (58.0, 20.0), (63.0, 20.0), (95.0, 20.0)])
    # radius 1.5 * stride 8 = 12 px around the centre: x = 50 and 58 qualify, 63 and 95 do not
    assert assign_image(locs, strides, lo, hi, box, 1.5).tolist() == [0, 0, -1, -1]
    assert assign_image(locs, strides, lo, hi, box, 0.0).tolist() == [0, 0, 0, -1]  # max distance 95 > 64
    # the same location on P4 (range 64..128): only where the largest distance is >= 64
    locs4, s4, lo4, hi4 = _locations([(50.0, 20.0), (30.0, 20.0)], stride=16.0, level=1)
    assert assign_image(locs4, s4, lo4, hi4, box, 0.0).tolist() == [-1, 0]
    assert assign_image(locs, strides, lo, hi, torch.zeros(0, 4), 1.5).tolist() == [-1] * 4


# ---------------------------------------------------------------- Dice
def test_dice_loss_values_and_weighting() -> None:
    a = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(dice_loss(a, a), torch.tensor([1 - 4 / (4 + 1e-5)]))
    torch.testing.assert_close(dice_loss(a, b), torch.tensor([1.0]))
    half = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    torch.testing.assert_close(dice_loss(half, a), torch.tensor([1 - 2 * 1.0 / (1.0 + 2.0 + 1e-5)]))
    pred = torch.cat([a, a, a])
    tgt = torch.cat([a, b, b])
    w = torch.tensor([0.5, 0.8, 1.0])
    valid = torch.tensor([True, True, False])
    # normalised by the number of valid instances (2), not by the sum of weights
    torch.testing.assert_close(weighted_dice_loss(pred, tgt, w, valid), (0.5 * dice_loss(a, a)[0] + 0.8) / 2)
    none = weighted_dice_loss(pred, tgt, w, torch.zeros(3, dtype=torch.bool))
    assert float(none) == 0.0


# ---------------------------------------------------------------- proposals
def test_proposals_split_the_budget_evenly_and_take_the_best() -> None:
    b, n_loc, n_cls = 2, 300, 3
    gen = torch.Generator().manual_seed(0)
    gt_idx = torch.full((b, n_loc), -1)
    gt_idx[0, :90] = 0
    gt_idx[0, 90:120] = 1
    gt_idx[0, 120:125] = 2  # only 5 positives: takes all 5
    gt_idx[1, :200] = torch.arange(200) % 100  # 100 GTs > 64: one each, then the best 64
    labels = torch.where(gt_idx >= 0, gt_idx % n_cls, -1)
    assign = Assignment(gt_idx, labels, torch.zeros(b, n_loc, 4), torch.zeros(b, n_loc, 4))

    class Flat:
        cls_logits = torch.randn(b, n_loc, n_cls, generator=gen)
        ctrness = torch.randn(b, n_loc, generator=gen)
        params = torch.randn(b, n_loc, 169, generator=gen)
        locations = torch.rand(n_loc, 2, generator=gen) * 100
        levels = torch.zeros(n_loc, dtype=torch.long)
        soi = torch.full((n_loc,), 64.0)

    props = select_proposals(Flat, assign, 64)  # type: ignore[arg-type]
    img0 = props.img_idx == 0
    counts = torch.bincount(props.gt_idx[img0], minlength=3).tolist()
    assert counts == [21, 21, 5]
    assert int((props.img_idx == 1).sum()) == 64
    assert len(set(props.gt_idx[props.img_idx == 1].tolist())) == 64
    score = torch.gather(Flat.cls_logits, 2, labels.clamp(min=0)[..., None])[..., 0].sigmoid() * Flat.ctrness.sigmoid()
    chosen = set(props.loc_idx[img0 & (props.gt_idx == 0)].tolist())
    assert chosen == set(torch.topk(score[0, :90], 21).indices.tolist())
    assert torch.equal(props.params, Flat.params[props.img_idx, props.loc_idx])


# ---------------------------------------------------------------- the Criterion
def _scene(b: int = 2, size: int = 128) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Flat-coloured rectangles on a dark background; boxes match the rectangles."""
    imgs = torch.full((b, 3, size, size), 40.0)
    boxes = [torch.tensor([[16.0, 20.0, 70.0, 90.0], [70.0, 60.0, 120.0, 120.0]]),
             torch.tensor([[30.0, 30.0, 100.0, 80.0]])][:b]
    colours = [[(220, 40, 40), (40, 200, 60)], [(60, 80, 230)]]
    for i, bs in enumerate(boxes):
        for box, c in zip(bs, colours[i]):
            x1, y1, x2, y2 = (int(v) for v in box)
            imgs[i, :, y1:y2, x1:x2] = torch.tensor(c, dtype=torch.float32)[:, None, None]
    classes = [torch.tensor([0, 1]), torch.tensor([2])][:b]
    return imgs, [{"boxes": bx, "classes": c} for bx, c in zip(boxes, classes)]


@pytest.fixture(scope="module")
def tiny() -> tuple[CondInst, ModelConfig]:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(num_classes=3)
    return CondInst(cfg), cfg


def _masks_from_boxes(targets: list[dict[str, torch.Tensor]], size: int) -> None:
    for t in targets:
        t["masks"] = ops.box_masks(t["boxes"], size, size)


def test_criterion_terms_and_gradients_reach_every_head(tiny: tuple[CondInst, ModelConfig]) -> None:
    model, cfg = tiny
    model.zero_grad()
    imgs, targets = _scene()
    batch = {"images": imgs, "image_sizes": [(128, 128)] * 2, "targets": targets}
    losses = Criterion(LossConfig(), cfg)(model(imgs), model, batch, iteration=10000)
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr", "loss_proj", "loss_pair"}
    assert all(v.dim() == 0 and bool(torch.isfinite(v)) and float(v.detach()) > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.conv1", "fpn.lateral.0", "head.cls_tower.0.0", "head.bbox_tower.0.0",
                 "head.cls_logits", "head.bbox_pred", "head.ctrness", "head.controller", "mask_branch.refine.0.0",
                 "mask_branch.project"):
        grad = dict(model.named_modules())[name].weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert float(model.head.scales.grad.abs().sum()) > 0


def test_pairwise_term_follows_the_warmup(tiny: tuple[CondInst, ModelConfig]) -> None:
    model, cfg = tiny
    imgs, targets = _scene()
    batch = {"images": imgs, "image_sizes": [(128, 128)] * 2, "targets": targets}
    crit = Criterion(LossConfig(), cfg)
    with torch.no_grad():
        dense = model(imgs)
        half = crit(dense, model, batch, 5000)["loss_pair"]
        full = crit(dense, model, batch, 20000)["loss_pair"]
    torch.testing.assert_close(half, 0.5 * full)


def test_images_without_boxes_and_a_batch_without_any(tiny: tuple[CondInst, ModelConfig]) -> None:
    model, cfg = tiny
    imgs, targets = _scene()
    empty = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long)}
    for tg in ([targets[0], empty], [empty, dict(empty)]):
        model.zero_grad()
        batch = {"images": imgs, "image_sizes": [(128, 128), (96, 128)], "targets": tg}
        losses = Criterion(LossConfig(), cfg)(model(imgs), model, batch, 100)
        assert all(bool(torch.isfinite(v)) for v in losses.values())
        sum(losses.values()).backward()
        assert model.head.controller.weight.grad is not None
        assert model.mask_branch.project.weight.grad is not None
    assert float(losses["loss_proj"].detach()) == 0.0 and float(losses["loss_pair"].detach()) == 0.0
    assert float(losses["loss_box"].detach()) == 0.0
    assert float(losses["loss_cls"].detach()) > 0  # negatives still train


def test_condinst_mode_uses_gt_masks(tiny: tuple[CondInst, ModelConfig]) -> None:
    model, cfg = tiny
    imgs, targets = _scene()
    crit = Criterion(LossConfig(mask_loss="condinst"), cfg)
    batch = {"images": imgs, "image_sizes": [(128, 128)] * 2, "targets": targets}
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\]"):
        crit(model(imgs), model, batch, 0)
    _masks_from_boxes(targets, 128)
    losses = crit(model(imgs), model, batch, 0)
    assert "loss_mask" in losses and "loss_proj" not in losses
    assert 0.0 < float(losses["loss_mask"].detach()) <= 1.0


def test_pseudo_masks_go_through_the_replaceable_seam(tiny: tuple[CondInst, ModelConfig]) -> None:
    model, cfg = tiny
    imgs, targets = _scene()
    targets[0]["pseudo_masks"] = torch.rand(2, 32, 32)
    targets[0]["pseudo_weights"] = torch.tensor([0.9, 0.6])
    targets[0]["pseudo_valid"] = torch.tensor([True, False])
    batch = {"images": imgs, "image_sizes": [(128, 128)] * 2, "targets": targets}
    seen: dict[str, torch.Tensor] = {}

    def custom(mask_logits, gt_idx, pseudo_masks, weights, valid, gt_boxes, *, iteration=0, tutor=None):  # type: ignore[no-untyped-def]
        seen.update(logits=mask_logits, gt_idx=gt_idx, masks=pseudo_masks, valid=valid, boxes=gt_boxes)
        return {"loss_custom": mask_logits.sum() * 0.0 + iteration}

    crit = Criterion(LossConfig(), cfg)
    default = crit(model(imgs), model, batch, 10000)
    assert float(default["loss_mask_sup"].detach()) > 0
    crit.pseudo_loss_fn = custom
    losses = crit(model(imgs), model, batch, 7)
    assert float(losses["loss_custom"].detach()) == 7.0
    assert seen["masks"].shape == (3, 32, 32) and seen["valid"].tolist() == [True, False, False]
    torch.testing.assert_close(seen["boxes"][2], targets[1]["boxes"][0] / 4)
    assert seen["logits"].shape[0] == seen["gt_idx"].shape[0] > 0 and int(seen["gt_idx"].max()) <= 2


def test_default_pseudo_mask_loss_hand_value() -> None:
    from boxseg.train.losses.config import MaskSupConfig
    from boxseg.train.losses.mask_sup import QualityMaskLoss

    loss_fn = QualityMaskLoss(MaskSupConfig(lambda_=0.5, warmup_iters=10000, target="binary"))
    pseudo = torch.full((2, 8, 8), 0.9)  # soft, cropped to each box and binarised inside
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]])
    logits = torch.full((3, 8, 8), -30.0)  # empty predictions: Dice 1 against any non-empty target
    gt_idx = torch.tensor([0, 0, 1])
    out = loss_fn(logits, gt_idx, pseudo, torch.tensor([0.8, 0.6]), torch.tensor([True, False]), boxes,
                  iteration=5000)
    # lambda 0.5 * ramp 0.5 * (0.8 * 1 + 0.8 * 1) / N=2 valid samples (not / sum of weights)
    torch.testing.assert_close(out["loss_mask_sup"], torch.tensor(0.5 * 0.5 * 0.8))
    logits[:2] = torch.where(ops.box_masks(boxes[:1], 8, 8), 30.0, -30.0)  # a perfect prediction
    out = loss_fn(logits, gt_idx, pseudo, torch.tensor([0.8, 0.6]), torch.tensor([True, False]), boxes,
                  iteration=5000)
    assert float(out["loss_mask_sup"]) < 1e-4


def test_default_pseudo_mask_loss_reads_loss_mask_sup() -> None:
    from boxseg.train.losses.config import MaskSupConfig
    from boxseg.train.losses.mask_sup import QualityMaskLoss

    torch.manual_seed(0)
    pseudo = torch.rand(3, 12, 12)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 8.0], [3.0, 2.0, 12.0, 12.0], [1.0, 1.0, 5.0, 5.0]])
    logits = torch.randn(5, 12, 12)
    gt_idx = torch.tensor([0, 1, 1, 2, 0])
    weights, valid = torch.tensor([0.9, 0.4, 0.7]), torch.tensor([True, True, False])
    for cfg in (MaskSupConfig(lambda_=1.0, warmup_iters=0), MaskSupConfig(target="soft", weight_exponent=2.0)):
        crit = Criterion(LossConfig(mask_sup=cfg), ModelConfig.tiny())
        assert isinstance(crit.pseudo_loss_fn, QualityMaskLoss) and crit.pseudo_loss_fn.cfg is cfg
    # The exponent is applied: w^2 with one valid sample per GT changes the value.
    one = QualityMaskLoss(MaskSupConfig(warmup_iters=0))(logits, gt_idx, pseudo, weights, valid, boxes)
    two = QualityMaskLoss(MaskSupConfig(warmup_iters=0, weight_exponent=2.0))(logits, gt_idx, pseudo, weights,
                                                                             valid, boxes)
    assert float(two["loss_mask_sup"]) < float(one["loss_mask_sup"])


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="LossConfig.mask_loss"):
        LossConfig(mask_loss="boxes")
    with pytest.raises(ValueError, match="box_score"):
        Criterion(LossConfig(box_score="fcos_cls_ctr"), ModelConfig.tiny())
    from boxseg.train.losses.config import MaskSupConfig

    from boxseg.config import config_to_dict, from_dict

    assert from_dict(LossConfig, config_to_dict(LossConfig()), source="test") == LossConfig()
    nested = from_dict(LossConfig, {"mask_sup": {"lambda": 1.0, "target": "soft"}}, source="test")
    assert (nested.mask_sup.lambda_, nested.mask_sup.target) == (1.0, "soft")
    with pytest.raises(ValueError, match=r"unknown key 'mask_sup_weight'"):
        from_dict(LossConfig, {"mask_sup_weight": 0.5}, source="test")
    with pytest.raises(ValueError, match=r"loss\.mask_sup\.type"):
        LossConfig(mask_sup=MaskSupConfig(type="bce"))


def test_tiny_model_overfits_two_images() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(num_classes=3)
    model = CondInst(cfg).train()
    imgs, targets = _scene()
    batch = {"images": imgs, "image_sizes": [(128, 128)] * 2, "targets": targets}
    crit = Criterion(LossConfig(pairwise_warmup_iters=100), cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    totals = []
    for it in range(25):
        losses = crit(model(imgs), model, batch, it)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    first, last = sum(totals[:3]) / 3, sum(totals[-3:]) / 3
    assert last < 0.75 * first, totals
    det = model.eval().inference(imgs)
    assert det.classes[1, 0].item() == 2  # the best detection of image 1 is its only object's class
