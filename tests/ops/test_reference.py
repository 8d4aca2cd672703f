"""The pure-PyTorch references against hand-computed values, docs/method.md "Unit-test checks" and naive loops."""

from __future__ import annotations

import math

import pytest
import torch

from boxseg.ops import reference as R


def test_adaptive_k_spec_vectors() -> None:
    sides = torch.tensor([20.0, 32, 40, 48, 50, 64, 80, 96, 120])
    assert R.adaptive_k(sides**2).tolist() == [2, 2, 3, 4, 4, 6, 8, 10, 10]


def test_adaptive_k_rounds_half_up_and_clamps() -> None:
    # side 36 -> K = 2 + 4/8 = 2.5 -> 3 (half up); custom range and zero/negative areas clamp to k_min.
    assert R.adaptive_k(torch.tensor([36.0**2, 0.0, -5.0])).tolist() == [3, 2, 2]
    assert R.adaptive_k(torch.tensor([2500.0]), k_min=1, k_max=3, area_small=1, area_large=10000).tolist() == [2]


def test_fusion_spec_vectors() -> None:
    s = torch.tensor([0.81, 0.64, 0.45], dtype=torch.float64)
    u = torch.tensor([1.0, 1.0, 0.95], dtype=torch.float64)
    gate = (s > 0.5) * (s * u).sqrt()
    assert torch.allclose(gate / gate.sum(), torch.tensor([0.5294, 0.4706, 0.0], dtype=torch.float64), atol=1e-4)
    # All candidates share the same mask, so the fused mask equals it: pixels {0.9, 0.7, 0.6, 0.3} inside the box.
    probs = torch.tensor([0.9, 0.7, 0.6, 0.3], dtype=torch.float64).view(1, 1, 4).expand(3, 1, 4).contiguous()
    fused, w, valid = R.fuse_candidate_masks(probs, torch.zeros(3, dtype=torch.long), s, u,
                                             torch.tensor([[0.0, 0.0, 4.0, 1.0]]))
    assert valid.tolist() == [True]
    assert w.item() == pytest.approx(math.sqrt(0.725 * (0.9 + 0.7 + 0.6) / 3), abs=1e-12)
    assert w.item() == pytest.approx(0.7292, abs=1e-4)
    assert torch.allclose(fused[0, 0], probs[0, 0])


def test_fusion_weights_follow_eq2() -> None:
    # Two candidates with different masks: fused = 0.5294 * m0 + 0.4706 * m1 (third gated out).
    s = torch.tensor([0.81, 0.64, 0.45], dtype=torch.float64)
    u = torch.tensor([1.0, 1.0, 0.95], dtype=torch.float64)
    probs = 0.5 + 0.5 * torch.rand(3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fused, w, valid = R.fuse_candidate_masks(probs, torch.zeros(3, dtype=torch.long), s, u,
                                             torch.tensor([[0.0, 0.0, 6.0, 3.0]]))
    expected = (0.9 * probs[0] + 0.8 * probs[1]) / 1.7
    assert valid.item()
    assert torch.allclose(fused[0, :3], expected[:3]) and fused[0, 3:].abs().sum() == 0  # cropped to the box
    conf = expected[:3][expected[:3] > 0.5]
    assert w.item() == pytest.approx(math.sqrt(0.725 * conf.mean().item()), rel=1e-12)


def test_fusion_invalid_cases() -> None:
    probs = torch.full((3, 4, 4), 0.9, dtype=torch.float64)
    gt_idx = torch.tensor([0, 1, 1])
    s = torch.tensor([0.4, 0.9, 0.8], dtype=torch.float64)
    u = torch.ones(3, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 12.0, 12.0]])
    fused, w, valid = R.fuse_candidate_masks(probs, gt_idx, s, u, boxes)
    # GT 0: only candidate below tau_m; GT 2: no candidate at all.
    assert valid.tolist() == [False, True, False]
    assert w[0] == 0 and w[2] == 0 and fused[0].abs().sum() == 0 and fused[2].abs().sum() == 0
    assert torch.isfinite(w).all() and torch.isfinite(fused).all()
    # No confident pixel inside the box -> invalid.
    low = torch.full((1, 4, 4), 0.3, dtype=torch.float64)
    f2, w2, v2 = R.fuse_candidate_masks(low, torch.zeros(1, dtype=torch.long), s[1:2], u[:1], boxes[:1])
    assert v2.tolist() == [False] and w2.item() == 0 and f2.abs().sum() == 0


def test_box_masks_use_pixel_centres() -> None:
    m = R.box_masks(torch.tensor([[0.6, 0.0, 2.5, 1.0], [-5.0, -5.0, -1.0, -1.0], [0.0, 0.0, 0.4, 9.0]]), 2, 4)
    assert m[0].tolist() == [[False, True, True, False], [False, False, False, False]]
    assert not m[1].any() and not m[2].any()


def test_lab_known_colours() -> None:
    rgb = torch.tensor([[255.0, 255, 255], [255, 0, 0], [0, 0, 0]], dtype=torch.float64).t().reshape(1, 3, 1, 3)
    lab = R.rgb_to_lab(rgb)[0, :, 0].t()
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64), atol=1e-2)
    assert torch.allclose(lab[1], torch.tensor([53.24, 80.09, 67.20], dtype=torch.float64), atol=5e-2)
    assert torch.allclose(lab[2], torch.zeros(3, dtype=torch.float64), atol=1e-9)


def test_color_similarity_matches_definition() -> None:
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, 6, 7, generator=gen, dtype=torch.float64) * 255
    sim = R.color_similarity(img, 3, 2, 2.0)
    lab = R.rgb_to_lab(img)[0]
    for j, (dy, dx) in enumerate(R.neighbour_offsets(3, 2)):
        for y in range(6):
            for x in range(7):
                ny, nx = y + dy, x + dx
                if 0 <= ny < 6 and 0 <= nx < 7:
                    want = math.exp(-float((lab[:, y, x] - lab[:, ny, nx]).norm()) / 2.0)
                else:
                    want = 0.0
                assert sim[0, j, y, x].item() == pytest.approx(want, abs=1e-12)


def _naive_pairwise(z: torch.Tensor, sim: torch.Tensor, img_idx: torch.Tensor, boxes: torch.Tensor, tau: float,
                    dilation: int) -> float:
    n, h, w = z.shape
    inside = R.box_masks(boxes, h, w)
    offs = R.neighbour_offsets(3, dilation)
    total, count = 0.0, 0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                if not inside[i, y, x]:
                    continue
                for j, (dy, dx) in enumerate(offs):
                    ny, nx = y + dy, x + dx
                    if not (0 <= ny < h and 0 <= nx < w) or sim[img_idx[i], j, y, x] < tau:
                        continue
                    p, q = torch.sigmoid(z[i, y, x]).item(), torch.sigmoid(z[i, ny, nx]).item()
                    total += -math.log(p * q + (1 - p) * (1 - q))
                    count += 1
    return total / max(count, 1)


def test_pairwise_reference_matches_naive_loop() -> None:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64) * 2
    sim = torch.rand(2, 8, 6, 7, generator=gen, dtype=torch.float64)
    idx = torch.tensor([0, 1, 1])
    boxes = torch.tensor([[0.0, 0.0, 7.0, 6.0], [1.2, 0.4, 5.1, 4.9], [-3.0, 2.0, 2.0, 9.0]])
    got = R.pairwise_affinity_loss(z, sim, idx, boxes, 0.3, 2).item()
    assert got == pytest.approx(_naive_pairwise(z, sim, idx, boxes, 0.3, 2), rel=1e-12)


def test_pairwise_reference_empty_is_zero_with_zero_grad() -> None:
    z = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    sim = torch.zeros(1, 8, 5, 5, dtype=torch.float64)
    loss = R.pairwise_affinity_loss(z, sim, torch.zeros(2, dtype=torch.long), torch.tensor([[0.0, 0, 5, 5]] * 2))
    loss.backward()
    assert loss.item() == 0.0 and z.grad.abs().sum() == 0


def test_box_iou_values_and_degenerate() -> None:
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 0, 0]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 5, 5]])
    iou = R.box_iou(a, b)
    assert torch.allclose(iou[0], torch.tensor([1 / 7, 1.0, 0.0]))
    assert torch.equal(iou[1], torch.zeros(3))


def _naive_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        if all(classes[k] != classes[i] or R.box_iou(boxes[k : k + 1], boxes[i : i + 1]).item() <= thr
               for k in kept):
            kept.append(i)
    return kept


def test_batched_nms_reference_matches_naive_with_ties() -> None:
    gen = torch.Generator().manual_seed(3)
    boxes = torch.rand(60, 4, generator=gen) * 40
    boxes[:, 2:] += boxes[:, :2]
    boxes[10:20] = boxes[0:10]  # duplicate boxes
    scores = (torch.rand(60, generator=gen) * 5).round() / 5  # many tied scores
    classes = torch.randint(0, 3, (60,), generator=gen)
    assert R.batched_nms(boxes, scores, classes, 0.5).tolist() == _naive_nms(boxes, scores, classes, 0.5)
    assert R.batched_nms(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []


def test_select_candidates_ranking_and_ties() -> None:
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    cand = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 10], [20, 20, 30, 30]])
    scores = torch.tensor([[0.2, 0.9], [0.5, 0.1], [0.5, 0.3], [0.9, 0.9], [0.1, 0.4]])
    cand_idx, gt_idx, s, u = R.select_candidates(cand, scores, gt, torch.tensor([0, 1]), torch.tensor([4, 10]))
    # GT 0 (class 0): IoU 1 for 0,1,2 -> by score 0.5 (idx 1), 0.5 (idx 2), 0.2 (idx 0); then idx 3 (IoU 0.5).
    assert cand_idx[gt_idx == 0].tolist() == [1, 2, 0, 3]
    # GT 1: k=10 > pool of 5 -> all 5; IoU 1 for idx 4 first, the rest IoU 0 by class-1 score then index.
    assert cand_idx[gt_idx == 1].tolist() == [4, 0, 3, 2, 1]
    assert torch.allclose(u[gt_idx == 0], torch.tensor([1.0, 1.0, 1.0, 0.5]))
    assert torch.allclose(s[gt_idx == 1], torch.tensor([0.4, 0.9, 0.9, 0.3, 0.1]))


def test_select_candidates_filters_and_empty() -> None:
    gt = torch.tensor([[0.0, 0, 10, 10]])
    cand = torch.tensor([[0.0, 0, 10, 10], [0, 0, 5, 10], [50, 50, 60, 60]])
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.9, 0.1]])
    ci, _, _, _ = R.select_candidates(cand, scores, gt, torch.tensor([0]), torch.tensor([10]), u_min=0.4)
    assert ci.tolist() == [0, 1]
    ci, _, _, _ = R.select_candidates(cand, scores, gt, torch.tensor([0]), torch.tensor([10]),
                                      require_class_match=True)
    assert ci.tolist() == [1, 2]
    ci, gi, s, u = R.select_candidates(cand[:0], scores[:0], gt, torch.tensor([0]), torch.tensor([3]))
    assert ci.numel() == gi.numel() == s.numel() == u.numel() == 0
