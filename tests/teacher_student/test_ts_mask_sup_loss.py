"""Quality-aware Dice (BoxSeg Eq. 1) and BoxTeacher's noise-aware loss with the noise-reduced affinity term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from boxseg.train.losses.mask_sup import (
    mask_targets,
    noise_reduced_affinity,
    quality_mask_loss,
)
from boxseg.train.pseudo.config import MaskSupConfig
from boxseg.train.schedule import linear_warmup


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 8, 8, generator=g, requires_grad=True)
    gt_idx = torch.tensor([0, 0, 1, 2, 2])
    pseudo = torch.rand(3, 8, 8, generator=g)
    weights = torch.tensor([0.9, 0.6, 0.75])
    valid = torch.tensor([True, False, True])
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [2.0, 2.0, 8.0, 8.0], [1.0, 1.0, 7.0, 5.0]])
    return logits, gt_idx, pseudo, weights, valid, boxes


def test_eq1_normalised_by_sample_count_not_weights():
    logits, gt_idx, pseudo, weights, valid, boxes = _setup()
    cfg = MaskSupConfig(lambda_=1.0, warmup_iters=0)
    out = quality_mask_loss(logits, gt_idx, pseudo, weights, valid, boxes, cfg)
    # By hand: samples 0,1 (GT 0) and 3,4 (GT 2) count; N = 4.
    inside = torch.zeros(3, 8, 8)
    inside[0, 0:6, 0:6] = 1  # cells whose centre lies in [0, 6]
    inside[2, 1:5, 1:7] = 1  # y in [1, 5], x in [1, 7]
    target = ((pseudo * inside) > 0.5).float()
    p = logits.sigmoid()

    def dice(i: int, gi: int) -> torch.Tensor:
        q = target[gi]
        return 1 - 2 * (p[i] * q).sum() / (p[i].square().sum() + q.square().sum() + 1e-5)

    expected = (0.9 * dice(0, 0) + 0.9 * dice(1, 0) + 0.75 * dice(3, 2) + 0.75 * dice(4, 2)) / 4
    torch.testing.assert_close(out["loss_mask_sup"], expected)
    out["loss_mask_sup"].backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_warmup_lambda_and_target_modes():
    assert linear_warmup(5000, 10000) == 0.5 and linear_warmup(20000, 10000) == 1.0 and linear_warmup(0, 10000) == 0
    logits, gt_idx, pseudo, weights, valid, boxes = _setup(1)
    full = quality_mask_loss(logits, gt_idx, pseudo, weights, valid, boxes, MaskSupConfig(warmup_iters=0))
    half = quality_mask_loss(logits, gt_idx, pseudo, weights, valid, boxes, MaskSupConfig(), iteration=5000)
    torch.testing.assert_close(half["loss_mask_sup"], 0.5 * full["loss_mask_sup"])
    one = quality_mask_loss(logits, gt_idx, pseudo, weights, valid, boxes, MaskSupConfig(lambda_=1.0, warmup_iters=0))
    torch.testing.assert_close(full["loss_mask_sup"], 0.5 * one["loss_mask_sup"])
    binary = mask_targets(pseudo, boxes, MaskSupConfig())
    soft = mask_targets(pseudo, boxes, MaskSupConfig(target="soft"))
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert soft[0, 7].sum() == 0 and soft[0, :6, :6].equal(pseudo[0, :6, :6])  # cropped to the box, kept soft
    assert torch.equal(binary, (soft > 0.5).float())


def test_no_valid_sample_gives_zero_with_grad():
    logits, gt_idx, pseudo, weights, _, boxes = _setup()
    out = quality_mask_loss(logits, gt_idx, pseudo, weights, torch.zeros(3, dtype=torch.bool), boxes,
                            MaskSupConfig(affinity_weight=0.1))
    assert out["loss_mask_sup"].item() == 0.0 and out["loss_mask_affinity"].item() == 0.0
    out["loss_mask_sup"].backward()
    assert logits.grad is not None


def _affinity_reference(logits, teacher, boxes, tau_a=0.5, d=2):
    """Unfold formulation of BT Eq. 3-5 (materialises N x 8 x H x W) for comparison."""
    n, h, w = logits.shape
    g = teacher[:, None]
    ones = torch.ones_like(g)
    k = torch.ones(1, 1, 3, 3, dtype=g.dtype)
    g_s = 0.5 * (g + F.conv2d(g, k, padding=1) / F.conv2d(ones, k, padding=1))

    def nb(t):
        u = F.unfold(t, 3, dilation=d, padding=d).view(n, 9, h, w)
        return torch.cat([u[:, :4], u[:, 5:]], 1)

    p = logits.sigmoid()[:, None]
    inimg = nb(ones) > 0
    mu = g_s * nb(g_s) + (1 - g_s) * (1 - nb(g_s))
    xs = torch.arange(w) + 0.5
    ys = torch.arange(h) + 0.5
    inbox = ((xs[None, None, :] >= boxes[:, 0, None, None]) & (xs[None, None, :] <= boxes[:, 2, None, None])
             & (ys[None, :, None] >= boxes[:, 1, None, None]) & (ys[None, :, None] <= boxes[:, 3, None, None]))
    edge = (mu > tau_a) & inimg & inbox[:, None]
    same = p * nb(p) + (1 - p) * (1 - nb(p))
    loss = -(torch.log(same) * edge).flatten(1).sum(1) / edge.flatten(1).sum(1).clamp_min(1)
    return loss


@pytest.mark.parametrize("seed", [0, 1])
def test_affinity_matches_unfold_reference(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 9, 11, generator=g, dtype=torch.float64)
    teacher = torch.rand(3, 9, 11, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 11.0, 9.0], [2.0, 1.0, 7.0, 6.0], [3.0, 3.0, 3.2, 3.2]], dtype=torch.float64)
    mine = noise_reduced_affinity(logits, teacher, boxes)
    ref = _affinity_reference(logits, teacher, boxes)
    torch.testing.assert_close(mine, ref)
    assert mine[2] == 0  # no centre inside a sub-pixel box


def test_affinity_ignores_uncertain_pairs_and_rewards_agreement():
    teacher = torch.zeros(1, 8, 8)
    teacher[0, :, :4] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    agree = torch.where(teacher > 0.5, 6.0, -6.0)
    disagree = torch.zeros(1, 8, 8)  # p = 0.5 everywhere: -log(0.5) per edge
    assert noise_reduced_affinity(agree, teacher, boxes).item() < 0.01
    assert noise_reduced_affinity(disagree, teacher, boxes).item() == pytest.approx(-torch.log(torch.tensor(0.5)).item(),
                                                                                    abs=1e-5)
    uncertain = torch.full((1, 8, 8), 0.5)  # mu = 0.5 is never > tau_a: no edges at all
    assert noise_reduced_affinity(disagree, uncertain, boxes).item() == 0.0


def test_boxteacher_total_combines_pixel_and_affinity():
    logits, gt_idx, pseudo, weights, valid, boxes = _setup(2)
    cfg = MaskSupConfig(warmup_iters=0, affinity_weight=0.1)
    out = quality_mask_loss(logits, gt_idx, pseudo, weights, valid, boxes, cfg)
    keep = torch.tensor([0, 1, 3, 4])
    aff = noise_reduced_affinity(logits[keep], pseudo[gt_idx[keep]], boxes[gt_idx[keep]])
    expected = 0.1 * (weights[gt_idx[keep]] * aff).sum() / 4
    torch.testing.assert_close(out["loss_mask_affinity"], expected)
    assert "loss_mask_affinity" not in quality_mask_loss(logits, gt_idx, pseudo, weights, valid, boxes)
