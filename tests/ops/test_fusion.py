"""Fused QMF + MQS (CPU kernel) against the per-GT reference loop and the vectors of docs/method.md
"Unit-test checks"."""

from __future__ import annotations

import math

import pytest
import torch
from ops_testdata import random_boxes

from boxseg.ops import library
from boxseg.ops import reference as R

pytestmark = pytest.mark.usefixtures("fused_cpu")


def fused(probs, gt_idx, s, u, boxes, tau_m=0.5):
    return library.fuse_candidate_masks(probs, gt_idx, s, u, boxes, tau_m)


def compare(probs, gt_idx, s, u, boxes, tau_m=0.5, atol=1e-12):
    got = fused(probs, gt_idx, s, u, boxes, tau_m)
    ref = R.fuse_candidate_masks(probs.double(), gt_idx, s.double(), u.double(), boxes, tau_m)
    assert torch.equal(got[2], ref[2])
    torch.testing.assert_close(got[0].double(), ref[0], atol=atol, rtol=atol)
    torch.testing.assert_close(got[1].double(), ref[1], atol=atol, rtol=atol)
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1]).all()
    return got


def test_spec_vectors() -> None:
    s = torch.tensor([0.81, 0.64, 0.45], dtype=torch.float64)
    u = torch.tensor([1.0, 1.0, 0.95], dtype=torch.float64)
    masks = torch.tensor([[0.9, 0.7, 0.6, 0.3], [0.9, 0.7, 0.6, 0.3], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    f, w, v = compare(masks.view(3, 1, 4), torch.zeros(3, dtype=torch.long), s, u, torch.tensor([[0.0, 0, 4, 1]]))
    assert v.tolist() == [True]
    assert w.item() == pytest.approx(0.7292, abs=1e-4)
    assert w.item() == pytest.approx(math.sqrt(0.725 * 2.2 / 3), abs=1e-12)
    # The third candidate is gated out (0.45 <= 0.5): its zero mask does not dilute the fusion.
    torch.testing.assert_close(f[0, 0], masks[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_batches_float64(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    g, h, w = 7, 19, 26
    counts = torch.randint(0, 6, (g,), generator=gen)
    gt_idx = torch.repeat_interleave(torch.arange(g), counts)
    gt_idx = gt_idx[torch.randperm(gt_idx.numel(), generator=gen)]  # candidates in no particular order
    m = gt_idx.numel()
    probs = torch.rand(m, h, w, generator=gen, dtype=torch.float64) ** 0.5
    s = torch.rand(m, generator=gen, dtype=torch.float64)
    u = torch.rand(m, generator=gen, dtype=torch.float64)
    got = compare(probs, gt_idx, s, u, random_boxes(g, h, w, gen))
    assert got[2].any()


def test_float32() -> None:
    gen = torch.Generator().manual_seed(3)
    g, h, w = 5, 16, 20
    gt_idx = torch.arange(g).repeat(4)
    probs = torch.rand(gt_idx.numel(), h, w, generator=gen)
    s = torch.rand(gt_idx.numel(), generator=gen) * 0.5 + 0.5
    u = torch.rand(gt_idx.numel(), generator=gen)
    compare(probs, gt_idx, s, u, random_boxes(g, h, w, gen, spill=0.0), atol=1e-5)


def test_edge_cases() -> None:
    h, w = 6, 8
    probs = torch.full((5, h, w), 0.8, dtype=torch.float64)
    probs[3] = 0.2
    gt_idx = torch.tensor([0, 1, 1, 2, 4])
    s = torch.tensor([0.3, 0.9, 0.7, 0.9, 0.9], dtype=torch.float64)
    u = torch.tensor([1.0, 0.5, 0.6, 1.0, 0.0], dtype=torch.float64)
    boxes = torch.tensor([
        [0.0, 0, 8, 6],      # 0: only candidate below tau_m -> invalid
        [-4.0, -4, 3, 3],    # 1: box partly outside -> valid, cropped
        [0.0, 0, 8, 6],      # 2: no confident pixel -> invalid
        [0.0, 0, 8, 6],      # 3: no candidate at all -> invalid
        [1.0, 1, 5, 5],      # 4: gate sums to 0 (IoU 0) -> invalid
        [20.0, 20, 30, 30],  # 5: box wholly outside the grid -> invalid
    ])
    f, wt, v = compare(probs, gt_idx, s, u, boxes)
    assert v.tolist() == [False, True, False, False, False, False]
    assert f[~v].abs().sum() == 0 and wt[~v].abs().sum() == 0
    assert f[1, :3, :3].min() > 0 and f[1].count_nonzero() == 9


def test_empty_inputs() -> None:
    probs = torch.zeros(0, 4, 5)
    f, w, v = compare(probs, torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0),
                      torch.tensor([[0.0, 0, 5, 4]]))
    assert f.shape == (1, 4, 5) and not v.any()
    f, w, v = compare(probs, torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), torch.zeros(0, 4))
    assert f.shape == (0, 4, 5) and w.shape == (0,) and v.shape == (0,)


def test_bad_gt_index_and_opcheck() -> None:
    with pytest.raises(RuntimeError, match="gt_idx"):
        fused(torch.zeros(2, 3, 3), torch.tensor([0, 5]), torch.ones(2), torch.ones(2), torch.zeros(2, 4))
    gen = torch.Generator().manual_seed(4)
    args = (torch.rand(4, 5, 6, generator=gen), torch.tensor([0, 1, 1, 0]), torch.rand(4, generator=gen),
            torch.rand(4, generator=gen), torch.tensor([[0.0, 0, 6, 5], [1.0, 1, 4, 4]]), 0.5)
    torch.library.opcheck(torch.ops.boxseg.fuse_candidate_masks.default, args)
