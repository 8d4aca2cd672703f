"""SIM's pseudo-labelling equations and PAIS's soft gate against hand-computed values (docs/method.md "SIM")."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from boxseg.train.copy_paste import MemoryBank, Tutor
from boxseg.train.losses.sim import ignore_band, ignore_bce_dice
from boxseg.train.pseudo.common import box_masks
from boxseg.train.pseudo.config import QAMConfig
from boxseg.train.pseudo.qam import fuse_general
from boxseg.train.pseudo.sim import (
    Prototypes,
    importance,
    instance_map,
    positives,
    self_correct,
    sim_label,
    sinkhorn,
)

from boxseg.ops import select_candidates


def test_sinkhorn_marginals() -> None:
    g = torch.Generator().manual_seed(0)
    n, l = 37, 5
    scores = F.normalize(torch.randn(n, 8, generator=g), dim=1) @ F.normalize(torch.randn(l, 8, generator=g), dim=1).t()
    q = sinkhorn(scores.double(), eps=0.05, iters=200)
    assert bool((q >= 0).all())
    # Each sub-centre receives 1/L of the mass, each pixel gives 1/N (SIM Eq. 2's constraints).
    torch.testing.assert_close(q.sum(0), torch.full((l,), 1 / l, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(q.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-12, rtol=0)
    # The last normalisation (over pixels) holds after any number of iterations, in float32 too.
    q3 = sinkhorn(scores, eps=0.05, iters=3)
    torch.testing.assert_close(q3.sum(1), torch.full((n,), 1 / n), atol=1e-6, rtol=0)


def test_sinkhorn_hand_values_and_empty() -> None:
    # Equal scores: the uniform plan 1/(N L).
    q = sinkhorn(torch.zeros(4, 2, dtype=torch.float64), eps=0.1)
    torch.testing.assert_close(q, torch.full((4, 2), 1 / 8, dtype=torch.float64))
    # Two pixels, two sub-centres, each pixel closer to "its" centre: the equal-mass plan is diagonal-dominant and
    # symmetric, with the diagonal share e^(1/eps) / (e^(1/eps) + e^(-1/eps)) of each row (closed form for 2x2).
    eps = 0.5
    q = sinkhorn(torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64), eps=eps, iters=50)
    d = math.exp(1 / eps) / (math.exp(1 / eps) + math.exp(-1 / eps))
    torch.testing.assert_close(q * 2, torch.tensor([[d, 1 - d], [1 - d, d]], dtype=torch.float64))
    assert sinkhorn(torch.zeros(0, 3), eps=0.1).shape == (0, 3)
    # A tiny eps does not overflow: the argmax survives.
    q = sinkhorn(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), eps=1e-4)
    assert bool(torch.isfinite(q).all()) and q.argmax(1).tolist() == [0, 1]


def test_semantic_map_on_a_toy_feature_map() -> None:
    protos = Prototypes(num_classes=2, dim=2, per_class=2, temperature=0.5)
    protos.protos[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    protos.ready[0] = True
    # Three pixels: on each sub-centre, and between them at 53 degrees.
    z = torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]])[:, None, :]  # (D=2, H=1, W=3)
    m = protos.semantic_map(z, torch.tensor([0, 1, 0]))
    expect = torch.sigmoid(torch.tensor([1.0, 1.0, 0.8]) / 0.5)
    torch.testing.assert_close(m[0, 0], expect)
    torch.testing.assert_close(m[2, 0], expect)  # the class's map is given to every object of the class
    torch.testing.assert_close(m[1], torch.full((1, 3), 0.5))  # class 1 has no prototypes yet
    assert protos.semantic_map(z, torch.zeros(0, dtype=torch.long)).shape == (0, 1, 3)


def test_prototype_update_first_pick_then_momentum_towards_assigned_means() -> None:
    protos = Prototypes(num_classes=1, dim=2, per_class=2, momentum=0.0, eps=0.05)
    protos.protos[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    protos.ready[0] = True
    # Two clusters of pixels near each sub-centre; momentum 0 moves each sub-centre to its cluster's mean.
    a = F.normalize(torch.tensor([[1.0, 0.2], [1.0, 0.4]]), dim=1)
    b = F.normalize(torch.tensor([[0.3, 1.0], [0.1, 1.0]]), dim=1)
    z = torch.cat([a, b]).t()[:, None, :]  # (2, 1, 4)
    fg = torch.ones(1, 1, 4, dtype=torch.bool)
    stats = protos.update(z, fg, torch.tensor([0]))
    assert stats == {"classes": 1, "pixels": 4}
    torch.testing.assert_close(protos.protos[0, 0], F.normalize(a.mean(0), dim=0))
    torch.testing.assert_close(protos.protos[0, 1], F.normalize(b.mean(0), dim=0))
    # Momentum 0.999 moves them by 0.1% of the way only.
    slow = Prototypes(num_classes=1, dim=2, per_class=2, momentum=0.999)
    slow.protos[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    slow.ready[0] = True
    slow.update(z, fg, torch.tensor([0]))
    expect = F.normalize(0.999 * torch.tensor([1.0, 0.0]) + 0.001 * a.mean(0), dim=0)
    torch.testing.assert_close(slow.protos[0, 0], expect)
    # A class seen for the first time starts from its own pixels; no foreground: nothing changes.
    fresh = Prototypes(num_classes=2, dim=2, per_class=3)
    fresh.update(z, fg, torch.tensor([1]), generator=torch.Generator().manual_seed(0))
    assert fresh.ready.tolist() == [False, True]
    pix = z.flatten(1).t()
    assert all(bool((torch.isclose(p[None], pix).all(1)).any()) for p in fresh.protos[1])
    before = fresh.protos.clone()
    assert fresh.update(z, torch.zeros(1, 1, 4, dtype=torch.bool), torch.tensor([1]))["classes"] == 0
    assert torch.equal(before, fresh.protos)


def test_instance_map_is_the_exp_iou_weighted_mean() -> None:
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])
    ious = torch.tensor([1.0, 0.0, 0.7])
    gt_idx = torch.tensor([0, 0, 2])
    fused, has = instance_map(probs, ious, gt_idx, num_gt=3, mu=5.0)
    w0, w1 = math.exp(5.0), 1.0
    torch.testing.assert_close(fused[0, 0], torch.tensor([w0 / (w0 + w1), w1 / (w0 + w1)]))
    torch.testing.assert_close(fused[2, 0], torch.tensor([0.5, 0.5]))  # one positive: its own mask
    assert has.tolist() == [True, False, True] and float(fused[1].abs().sum()) == 0.0


def test_self_correction_and_the_ignore_band() -> None:
    ms = torch.tensor([0.2, 0.6, 1.0])
    mi = torch.tensor([0.0, 0.8, 0.4])
    torch.testing.assert_close(self_correct(ms, mi, alpha=0.5), torch.tensor([0.1, 0.7, 0.7]))
    torch.testing.assert_close(self_correct(ms, mi, alpha=0.0), ms)
    prob = torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.9, 0.9]])
    inside = torch.tensor([[True, True, True, True, True, False]])
    target, weight = ignore_band(prob, inside, tau_low=0.3, tau_high=0.7)
    assert target.tolist() == [[0, 0, 0, 1, 1, 0]]  # outside the GT box: background, whatever the maps say
    assert weight.tolist() == [[1, 1, 0, 1, 1, 1]]  # the band is open on both ends


def test_ignore_bce_dice_counts_only_unignored_pixels() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(3, 6, 5, generator=g) > 0.5).double()
    weight = (torch.rand(3, 6, 5, generator=g) > 0.3).double()
    loss = ignore_bce_dice(logits, target, weight)
    for i in range(3):
        keep = weight[i] > 0
        z, t = logits[i][keep], target[i][keep]
        p = z.sigmoid()
        bce = F.binary_cross_entropy_with_logits(z, t)
        dice = 1 - 2 * (p * t).sum() / ((p * p).sum() + (t * t).sum() + 1e-5)
        torch.testing.assert_close(loss[i], bce + dice)
    # Ignored pixels get no gradient.
    loss.sum().backward()
    assert float(logits.grad[weight == 0].abs().max()) == 0.0
    # Everything ignored: no BCE, Dice 1 (a constant), never NaN.
    empty = ignore_bce_dice(torch.randn(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    torch.testing.assert_close(empty, torch.ones(1))
    with pytest.raises(ValueError, match="differ"):
        ignore_bce_dice(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), torch.zeros(1, 2, 2))


def test_importance_and_sampling() -> None:
    prob = torch.tensor([[0.9, 0.8, 0.2], [0.4, 0.4, 0.4]])
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(importance(prob, target), torch.tensor([0.85, 0.0]))
    # SIM's copy-paste draws tutors in proportion to S: zero importance is never drawn while another has some,
    # and over many draws the frequencies follow the weights (seeded, so deterministic).
    bank = MemoryBank(8)
    for w in (0.0, 1.0, 3.0, 0.0):
        bank.push(Tutor(patch=torch.zeros(3, 1, 1, dtype=torch.uint8), mask=torch.ones(1, 1, dtype=torch.bool),
                        cls=0, w=w, scale=1.0))
    gen = torch.Generator().manual_seed(0)
    counts = {0.0: 0, 1.0: 0, 3.0: 0}
    for _ in range(2000):
        counts[bank.sample(gen, weighted=True).w] += 1
    assert counts[0.0] == 0 and 0.70 < counts[3.0] / 2000 < 0.80
    # All-zero weights: a uniform draw, still a draw.
    flat = MemoryBank(2)
    flat.push(Tutor(patch=torch.zeros(3, 1, 1, dtype=torch.uint8), mask=torch.ones(1, 1, dtype=torch.bool), cls=0,
                    w=0.0, scale=1.0))
    assert flat.sample(gen, weighted=True).w == 0.0


def test_soft_gate_tends_to_the_hard_gate() -> None:
    g = torch.Generator().manual_seed(3)
    h = w = 16
    cand = torch.rand(60, 2, generator=g) * 40
    cand = torch.cat([cand, cand + 8 + torch.rand(60, 2, generator=g) * 20], 1)
    gt = torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]])
    scores = torch.rand(60, 2, generator=g)
    ci, gi, s, u = select_candidates(cand, scores, gt, torch.tensor([0, 1]), torch.tensor([6, 6]))
    assert bool(((s - 0.5).abs() > 1e-3).all())  # no candidate sits on the gate itself
    probs = torch.rand(ci.shape[0], h, w, generator=g)
    inside = box_masks(gt / 4, h, w)
    hard = fuse_general(probs, gi, s, u, inside, QAMConfig(gate="hard"))
    soft = fuse_general(probs, gi, s, u, inside, QAMConfig(gate="soft", soft_gate_power=1e4))
    for a, b in zip(hard, soft):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-6, rtol=0)
    # A gentle power lets the candidates below the gate count: the fused masks differ.
    gentle = fuse_general(probs, gi, s, u, inside, QAMConfig(gate="soft", soft_gate_power=1.0))
    assert float((gentle[0] - hard[0]).abs().max()) > 1e-3


def test_positives_follow_the_fcos_rule_and_keep_the_best_overlaps() -> None:
    # One level of stride 8 over a 64x64 image; one GT in the middle, one in a corner.
    ys, xs = torch.meshgrid(torch.arange(8) * 8.0 + 4, torch.arange(8) * 8.0 + 4, indexing="ij")
    locs = torch.stack([xs.flatten(), ys.flatten()], 1)
    strides = torch.full((64,), 8.0)
    levels = torch.zeros(64, dtype=torch.long)
    gt = torch.tensor([[16.0, 16.0, 48.0, 48.0], [0.0, 0.0, 12.0, 12.0]])
    pred = torch.cat([locs - 16, locs + 16], 1)  # a 32x32 box around each location
    pred[4 * 8 + 4] = gt[0]  # location (36, 36) predicts GT 0 exactly
    loc, g, iou = positives(locs, strides, levels, pred, gt, (64.0, 128.0, 256.0, 512.0), 1.5, max_per_gt=3)
    # GT 0's centre region (radius 1.5 strides around (32, 32)) holds 4 locations; the 3 kept are its best overlaps.
    assert g.tolist() == [0, 0, 0, 1] and int(loc[0]) == 36 and float(iou[0]) == 1.0
    assert bool((iou[:3].diff() <= 0).all())
    assert int(loc[3]) == 0  # the corner GT's one location
    none = positives(locs, strides, levels, pred, gt[:0], (64.0, 128.0, 256.0, 512.0), 1.5, max_per_gt=3)
    assert [t.numel() for t in none] == [0, 0, 0]


def test_sim_label_blends_the_maps_and_zeroes_outside_the_box() -> None:
    cfg = SimpleNamespace(mu=5.0, alpha=0.5, tau_low=0.3, tau_high=0.7)
    protos = Prototypes(num_classes=1, dim=2, per_class=1, temperature=0.1)
    protos.protos[0, 0] = torch.tensor([1.0, 0.0])
    protos.ready[0] = True
    z = torch.zeros(2, 4, 4)
    z[0, :, :2] = 1.0  # left half looks like the class
    z[1, :, 2:] = 1.0
    probs = torch.full((1, 4, 4), 0.8)
    gt = torch.tensor([[0.0, 0.0, 12.0, 16.0], [4.0, 4.0, 4.5, 12.0]])  # the second one is degenerate (< 1 px)
    m_i, has = instance_map(probs, torch.tensor([0.8]), torch.tensor([0]), 2, cfg.mu)
    out = sim_label(z, protos, m_i, has, gt, torch.tensor([0, 0]), cfg)
    m_s_in, m_s_out = torch.sigmoid(torch.tensor(10.0)), torch.sigmoid(torch.tensor(0.0))
    expect = torch.zeros(4, 4)
    expect[:, :2] = 0.5 * m_s_in + 0.4
    expect[:, 2] = 0.5 * m_s_out + 0.4  # inside the box (x < 3 cells), where the semantic map disagrees
    torch.testing.assert_close(out["masks"][0], expect)
    assert out["valid"].tolist() == [True, False] and float(out["masks"][1].abs().sum()) == 0.0
    # Importance: the mean blend over the pixels >= tau_high (the left half).
    torch.testing.assert_close(out["weights"], torch.stack([0.5 * m_s_in + 0.4, torch.tensor(0.0)]))
