"""BoxTeacher BPMA + MCS (BT Alg. 1 and Eq. 1; docs/method.md "Unit-test checks" item 5)."""

from __future__ import annotations

import math

import pytest
import torch
from boxseg.train.pseudo.bpma import assign, bpma_label, mask_confidence
from boxseg.train.pseudo.config import BPMAConfig


def _box_with_iou(gt: list[float], iou: float) -> list[float]:
    """A box sharing gt's left/top/bottom whose width gives the wanted IoU (a sub-box of gt)."""
    x1, y1, x2, y2 = gt
    return [x1, y1, x1 + (x2 - x1) * iou, y2]


def test_higher_confidence_assigned_first():
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    preds = torch.tensor([_box_with_iou(gt[0].tolist(), 0.6), _box_with_iou(gt[0].tolist(), 0.7)])
    a = assign(preds, torch.tensor([0.9, 0.8]), gt, tau_iou=0.5, tau_c=0.05)
    assert a.tolist() == [0]  # the 0.9 prediction wins although its IoU (0.6) is lower


def test_iou_below_threshold_never_assigned_and_gt0_assignable():
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0], [100.0, 100.0, 140.0, 140.0]])
    preds = torch.tensor([_box_with_iou(gt[0].tolist(), 0.49), _box_with_iou(gt[1].tolist(), 0.8)])
    a = assign(preds, torch.tensor([0.9, 0.8]), gt, tau_iou=0.5, tau_c=0.05)
    assert a.tolist() == [-1, 1]
    a0 = assign(preds[1:] - 100.0, torch.tensor([0.8]), gt, tau_iou=0.5, tau_c=0.05)
    assert a0.tolist() == [0, -1]  # GT index 0 is assignable (the public code's `> 0` test is not)
    # One prediction never serves two GTs; a GT already served is skipped by the next prediction.
    same = torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 40.0, 40.0]])
    a2 = assign(same, torch.tensor([0.9, 0.8]), same.clone(), 0.5, 0.05)
    assert sorted(a2.tolist()) == [0, 1]
    # Below tau_c: ignored.
    assert assign(preds, torch.tensor([0.01, 0.02]), gt, 0.5, 0.05).tolist() == [-1, -1]


@pytest.mark.parametrize("score", ["mcs", "cls", "none"])
def test_assigned_mask_zero_outside_gt_box_and_weights(score):
    gt = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    preds = torch.tensor([[4.0, 4.0, 24.0, 24.0]])
    masks = torch.full((1, 8, 8), 0.8)
    out = bpma_label(preds, torch.tensor([0.64]), masks, gt, BPMAConfig(score=score), mask_stride=4)
    m = out["masks"][0]
    assert out["valid"].tolist() == [True]
    assert m[:2].sum() == 0 and m[:, :2].sum() == 0 and m[6:].sum() == 0 and m[:, 6:].sum() == 0
    assert torch.allclose(m[2:6, 2:6], torch.tensor(0.8))
    expected = {"mcs": math.sqrt(0.64 * 0.8), "cls": 0.64, "none": 1.0}[score]
    assert out["weights"].item() == pytest.approx(expected, abs=1e-6)


def test_mcs_formula_and_no_confident_pixel():
    masks = torch.tensor([[[0.9, 0.7], [0.6, 0.3]], [[0.2, 0.1], [0.4, 0.3]]])
    region = torch.ones_like(masks, dtype=torch.bool)
    s = mask_confidence(torch.tensor([0.81, 0.9]), masks, region, 0.5)
    assert s[0].item() == pytest.approx(math.sqrt(0.81 * (0.9 + 0.7 + 0.6) / 3), abs=1e-6)
    assert s[1].item() == 0.0 and torch.isfinite(s).all()


def test_empty_inputs():
    out = bpma_label(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 4, 4), torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    assert out["valid"].tolist() == [False] and out["masks"].shape == (1, 4, 4)
    out = bpma_label(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([0.9]), torch.rand(1, 4, 4),
                     torch.zeros(0, 4))
    assert out["masks"].shape == (0, 4, 4)
