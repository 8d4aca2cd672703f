"""QAM (BoxSeg Sec. 3.2): adaptive K, QMF weights, MQS, edge cases (docs/method.md "Unit-test checks" items 1-4)
and every option."""

from __future__ import annotations

import math

import pytest
import torch
from boxseg.train.pseudo.config import QAMConfig
from boxseg.train.pseudo.qam import compute_k, fuse_general, qam_label

from boxseg.ops import box_masks, fuse_candidate_masks, select_candidates

S = [0.81, 0.64, 0.45]


def _pool(scores=S, gt=(0.0, 0.0, 8.0, 8.0), heights=(8.0, 8.0, 7.6)):
    """Three candidates over one GT: IoU 1, 1, 0.95 (docs/method.md "Unit-test checks" item 2); class 0 scores
    `scores`."""
    boxes = torch.tensor([[gt[0], gt[1], gt[2], gt[1] + hh] for hh in heights])
    cls = torch.tensor([[s, 0.01] for s in scores])
    return boxes, cls, torch.tensor([gt]), torch.tensor([0])


def _fn(masks: torch.Tensor):
    return lambda idx: masks[idx]


@pytest.mark.parametrize("side, k", [(20, 2), (32, 2), (40, 3), (48, 4), (50, 4), (64, 6), (80, 8), (96, 10),
                                     (120, 10)])
def test_adaptive_k_vectors(side, k):
    assert compute_k(torch.tensor([float(side * side)]), QAMConfig()).item() == k


def test_k_rounding_and_fixed_k():
    a = torch.tensor([50.0 ** 2, 40.0 ** 2])
    assert compute_k(a, QAMConfig(k_rounding="floor")).tolist() == [4, 3]
    assert compute_k(a, QAMConfig(k_rounding="ceil")).tolist() == [5, 3]
    assert compute_k(a, QAMConfig(adaptive_k=False, k=7)).tolist() == [7, 7]


def test_qmf_weights_and_fused_is_weighted_sum():
    torch.manual_seed(0)
    boxes, cls, gt, gcls = _pool()
    masks = torch.rand(3, 2, 2) * 0.5 + 0.5
    # The fused-op path, and the general path (taken when tau_pixel differs from tau_score).
    for cfg in (QAMConfig(adaptive_k=False), QAMConfig(adaptive_k=False, tau_pixel=0.5 + 1e-9)):
        out = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=cfg)
        g = torch.tensor([math.sqrt(0.81), math.sqrt(0.64), 0.0])
        wts = g / g.sum()
        torch.testing.assert_close(wts, torch.tensor([0.5294, 0.4706, 0.0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(out["masks"][0], (wts[:, None, None] * masks).sum(0), atol=1e-6, rtol=0)
        assert out["valid"].tolist() == [True] and out["num_candidates"].tolist() == [3]


def test_mqs_example_and_outside_pixels_ignored():
    boxes, cls, gt, gcls = _pool()
    m = torch.tensor([[0.9, 0.7, 0.99], [0.6, 0.3, 0.99]])  # grid 2x3; column 2 lies outside the 8x8 box
    masks = m.expand(3, 2, 3).clone()
    cfg = QAMConfig(adaptive_k=False)
    out = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=cfg, mask_stride=4)
    s_hat = (0.81 + 0.64) / 2
    assert s_hat == pytest.approx(0.725)
    m_hat = (0.9 + 0.7 + 0.6) / 3
    assert m_hat == pytest.approx(0.7333, abs=1e-4)
    assert out["weights"].item() == pytest.approx(math.sqrt(0.725 * m_hat), abs=1e-5)
    assert out["weights"].item() == pytest.approx(0.7292, abs=1e-4)
    assert out["masks"][0, :, 2].abs().sum() == 0  # cropped to the GT box
    masks2 = masks.clone()
    masks2[:, :, 2] = 0.2  # outside-box pixels change: m-hat must not
    out2 = qam_label(boxes, cls, _fn(masks2), gt, gcls, cfg=cfg, mask_stride=4)
    assert out2["weights"].item() == pytest.approx(out["weights"].item(), abs=1e-7)


def test_edge_cases_never_nan():
    boxes, cls, gt, gcls = _pool(scores=[0.5, 0.3, 0.1])
    masks = torch.rand(3, 4, 4)
    out = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=QAMConfig(adaptive_k=False))
    assert out["valid"].tolist() == [False] and out["weights"].item() == 0.0
    assert torch.isfinite(out["masks"]).all() and out["masks"].abs().sum() == 0
    # Empty pool.
    out = qam_label(torch.zeros(0, 4), torch.zeros(0, 2), _fn(torch.zeros(0, 4, 4)), gt, gcls,
                    cfg=QAMConfig(adaptive_k=False))
    assert out["valid"].tolist() == [False] and out["masks"].shape == (1, 4, 4)
    # No GT at all.
    out = qam_label(boxes, cls, _fn(masks), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                    gt_areas_orig=torch.zeros(0))
    assert out["masks"].shape == (0, 4, 4) and out["valid"].shape == (0,)
    # K larger than the pool: the whole pool is used.
    boxes, cls, gt, gcls = _pool()
    out = qam_label(boxes, cls, _fn(torch.full((3, 4, 4), 0.9)), gt, gcls, cfg=QAMConfig(adaptive_k=False, k=50))
    assert out["num_candidates"].tolist() == [3] and out["valid"].tolist() == [True]
    # No confident pixel inside the box, a degenerate GT box, all-zero and all-one masks.
    out = qam_label(boxes, cls, _fn(torch.full((3, 4, 4), 0.4)), gt, gcls, cfg=QAMConfig(adaptive_k=False))
    assert out["valid"].tolist() == [False]
    flat_gt = torch.tensor([[0.0, 0.0, 8.0, 0.5]])
    out = qam_label(boxes, cls, _fn(torch.ones(3, 4, 4)), flat_gt, gcls, cfg=QAMConfig(adaptive_k=False))
    assert out["valid"].tolist() == [False] and torch.isfinite(out["weights"]).all()
    out = qam_label(boxes, cls, _fn(torch.ones(3, 4, 4)), gt, gcls, gt_areas_orig=torch.tensor([0.0]))
    assert out["valid"].tolist() == [True] and out["weights"].item() <= 1.0


def test_empty_policy_top1():
    boxes, cls, gt, gcls = _pool(scores=[0.4, 0.49, 0.3])
    masks = torch.stack([torch.full((2, 2), 0.8), torch.full((2, 2), 0.6), torch.full((2, 2), 0.7)])
    out = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=QAMConfig(adaptive_k=False, empty_policy="top1"))
    # Highest IoU: candidates 0 and 1 tie at 1.0, the score breaks the tie -> candidate 1 (0.49).
    assert out["valid"].tolist() == [True]
    torch.testing.assert_close(out["masks"][0], masks[1])
    assert out["weights"].item() == pytest.approx(math.sqrt(0.49 * 0.6), abs=1e-6)


def test_filters_u_min_and_class_match():
    boxes, cls, gt, gcls = _pool()
    masks = torch.full((3, 2, 2), 0.9)
    out = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=QAMConfig(adaptive_k=False, u_min=0.97))
    assert out["num_candidates"].tolist() == [2]
    cls2 = cls.clone()
    cls2[0] = torch.tensor([0.81, 0.9])  # argmax is class 1, not the GT class
    out = qam_label(boxes, cls2, _fn(masks), gt, gcls, cfg=QAMConfig(adaptive_k=False, require_class_match=True))
    assert out["num_candidates"].tolist() == [2]


def test_area_frame_changes_k():
    boxes, cls, gt, gcls = _pool(gt=(0.0, 0.0, 40.0, 40.0), heights=(40.0, 40.0, 38.0))
    masks = torch.full((3, 10, 10), 0.9)
    orig = qam_label(boxes, cls, _fn(masks), gt, gcls, gt_areas_orig=torch.tensor([100.0 ** 2]))
    teach = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=QAMConfig(area_frame="teacher"))
    assert orig["k"].tolist() == [10] and teach["k"].tolist() == [3]
    with pytest.raises(ValueError, match="gt_areas_orig"):
        qam_label(boxes, cls, _fn(masks), gt, gcls)


def test_stage_switches_table4():
    torch.manual_seed(1)
    boxes, cls, gt, gcls = _pool(scores=[0.3, 0.9, 0.7], heights=(7.6, 8.0, 8.0))
    masks = torch.rand(3, 2, 2)
    bqr = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=QAMConfig(adaptive_k=False, stages="bqr"))
    torch.testing.assert_close(bqr["masks"][0], masks[1])  # top-1 by IoU (tie 1.0 broken by score 0.9)
    assert bqr["weights"].tolist() == [1.0] and bqr["num_candidates"].tolist() == [1]
    qmf = qam_label(boxes, cls, _fn(masks * 0.5 + 0.5), gt, gcls, cfg=QAMConfig(adaptive_k=False, stages="bqr_qmf"))
    full = qam_label(boxes, cls, _fn(masks * 0.5 + 0.5), gt, gcls, cfg=QAMConfig(adaptive_k=False))
    assert qmf["weights"].tolist() == [1.0] and 0.5 < full["weights"].item() < 1.0
    torch.testing.assert_close(qmf["masks"], full["masks"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_general_path_matches_fused_op(seed):
    g = torch.Generator().manual_seed(seed)
    p, G, h, w = 30, 5, 12, 16
    xy = torch.rand(p, 2, generator=g) * 40
    cand = torch.cat([xy, xy + 8 + torch.rand(p, 2, generator=g) * 20], 1)
    gxy = torch.rand(G, 2, generator=g) * 30
    gt = torch.cat([gxy, gxy + 10 + torch.rand(G, 2, generator=g) * 20], 1)
    scores = torch.rand(p, 3, generator=g)
    gcls = torch.randint(3, (G,), generator=g)
    k = torch.randint(1, 8, (G,), generator=g)
    ci, gi, s, u = select_candidates(cand, scores, gt, gcls, k)
    probs = torch.rand(ci.shape[0], h, w, generator=g)
    grid = gt / 4
    ref = fuse_candidate_masks(probs, gi, s, u, grid, tau_m=0.5)
    mine = fuse_general(probs, gi, s, u, box_masks(grid, h, w), QAMConfig())
    for a, b in zip(ref, mine):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=0)


def test_soft_gate_box_agreement_and_smaller_wins():
    boxes, cls, gt, gcls = _pool(scores=[0.81, 0.64, 0.45])
    masks = torch.full((3, 2, 2), 0.9)
    soft = qam_label(boxes, cls, _fn(masks), gt, gcls, cfg=QAMConfig(adaptive_k=False, gate="soft"))
    assert soft["valid"].tolist() == [True] and 0.5 < soft["weights"].item() < 1.0
    # Box agreement: a mask covering only the top-left quarter of the box disagrees with it.
    part = torch.zeros(3, 2, 2)
    part[:, 0, 0] = 0.9
    gate = qam_label(boxes, cls, _fn(part), gt, gcls, cfg=QAMConfig(adaptive_k=False, box_agreement="gate"))
    mult = qam_label(boxes, cls, _fn(part), gt, gcls, cfg=QAMConfig(adaptive_k=False, box_agreement="multiply"))
    base = qam_label(boxes, cls, _fn(part), gt, gcls, cfg=QAMConfig(adaptive_k=False))
    assert gate["valid"].tolist() == [False] and base["valid"].tolist() == [True]
    assert mult["weights"].item() == pytest.approx(base["weights"].item() * 0.25, abs=1e-6)
    # Smaller wins: two GTs, the small one inside the big one, both masks cover the shared pixels.
    gts = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 8.0, 8.0]])
    cand = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 8.0, 8.0]])
    cs = torch.tensor([[0.9, 0.0], [0.9, 0.0]])
    m = torch.full((2, 4, 4), 0.9)
    cfg = QAMConfig(adaptive_k=False, k=1, overlap_resolution="smaller_wins")
    out = qam_label(cand, cs, _fn(m), gts, torch.tensor([0, 0]), cfg=cfg)
    assert out["masks"][0, :2, :2].sum() == 0 and out["masks"][1, :2, :2].min() > 0.8
    assert out["masks"][0, 2:, 2:].min() > 0.8


@pytest.mark.parametrize("seed", range(4))
def test_never_nan_on_random_degenerate_inputs(seed):
    """Zero-area and off-grid boxes, 0/1 masks and scores, every option: outputs stay finite and consistent."""
    g = torch.Generator().manual_seed(seed)
    p, n_gt, h, w = 12, 4, 6, 8
    cand = torch.randint(-8, 40, (p, 4), generator=g).float()
    cand[: p // 3, 2:] = cand[: p // 3, :2]  # zero-area candidates
    gt = torch.randint(-8, 40, (n_gt, 4), generator=g).float()
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2])  # some zero-area, some off the mask grid
    scores = torch.randint(0, 3, (p, 2), generator=g).float() / 2  # 0, 0.5, 1
    masks = torch.randint(0, 2, (p, h, w), generator=g).float()
    for cfg in (QAMConfig(area_frame="teacher"), QAMConfig(area_frame="teacher", empty_policy="top1"),
                QAMConfig(area_frame="teacher", gate="soft"), QAMConfig(area_frame="teacher", stages="bqr"),
                QAMConfig(area_frame="teacher", box_agreement="multiply", overlap_resolution="smaller_wins"),
                QAMConfig(area_frame="teacher", tau_pixel=0.0, u_min=0.5, require_class_match=True)):
        out = qam_label(cand, scores, _fn(masks), gt, torch.randint(0, 2, (n_gt,), generator=g), cfg=cfg,
                        mask_stride=4, mask_shape=(h, w))
        for key in ("masks", "weights"):
            assert torch.isfinite(out[key]).all(), (cfg, key)
        assert ((out["weights"] >= 0) & (out["weights"] <= 1)).all()
        assert (out["weights"][~out["valid"]] == 0).all() and (out["masks"][~out["valid"]] == 0).all()
