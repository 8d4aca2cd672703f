"""Fused class-aware NMS (CPU kernel) against the reference, with ties and empty input."""

from __future__ import annotations

import pytest
import torch

from boxseg.ops import library
from boxseg.ops import reference as R

pytestmark = pytest.mark.usefixtures("fused_cpu")


def random_scene(n: int, classes: int, gen: torch.Generator, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 300
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 80 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=gen, dtype=dtype)
    return boxes, scores, torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("seed,n,classes,thr", [(0, 500, 5, 0.5), (1, 3000, 80, 0.6), (2, 300, 1, 0.3)])
def test_matches_reference(seed: int, n: int, classes: int, thr: float) -> None:
    boxes, scores, cls = random_scene(n, classes, torch.Generator().manual_seed(seed))
    got = library.batched_nms(boxes, scores, cls, thr)
    assert got.dtype == torch.long
    assert torch.equal(got, R.batched_nms(boxes, scores, cls, thr))


def test_ties_duplicates_and_degenerate_boxes() -> None:
    gen = torch.Generator().manual_seed(3)
    boxes, scores, cls = random_scene(400, 4, gen, torch.float64)
    boxes[100:200] = boxes[:100]  # exact duplicates (IoU 1)
    scores = (scores * 4).round() / 4  # heavy score ties: order by index
    boxes[300:310, 2:] = boxes[300:310, :2]  # zero-area boxes (IoU 0 with everything)
    got = library.batched_nms(boxes, scores, cls, 0.5)
    assert torch.equal(got, R.batched_nms(boxes, scores, cls, 0.5))
    ranked = scores[got]
    assert (ranked[:-1] >= ranked[1:]).all()
    same = ranked[:-1] == ranked[1:]
    assert (got[:-1][same] < got[1:][same]).all()  # ties by index


def test_threshold_is_strict_and_rounded_like_the_reference() -> None:
    # IoU exactly 0.5 (1/2) is kept at threshold 0.5; IoU 1/3 in float32 vs a 1/3 threshold.
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1], [10, 10, 13, 11], [10, 10, 12, 11]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    cls = torch.zeros(4, dtype=torch.long)
    for thr in (0.5, 0.49, 1 / 3, 2 / 3, 0.6666):
        assert torch.equal(library.batched_nms(boxes, scores, cls, thr), R.batched_nms(boxes, scores, cls, thr))


def test_empty_and_single() -> None:
    empty = library.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    one = library.batched_nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), torch.tensor([7]), 0.5)
    assert one.tolist() == [0]


def test_opcheck() -> None:
    boxes, scores, cls = random_scene(40, 3, torch.Generator().manual_seed(5))
    torch.library.opcheck(torch.ops.boxseg.batched_nms.default, (boxes, scores, cls, 0.5))


def test_classes_never_suppress_each_other() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4)
    scores = torch.tensor([0.1, 0.4, 0.3, 0.2])
    cls = torch.tensor([0, 1, 0, -1])
    assert library.batched_nms(boxes, scores, cls, 0.5).tolist() == [1, 2, 3]


def test_box_iou_public_matches_reference() -> None:
    from boxseg import ops

    gen = torch.Generator().manual_seed(4)
    a, _, _ = random_scene(20, 1, gen)
    b, _, _ = random_scene(30, 1, gen)
    iou = ops.box_iou(a, b)
    assert iou.shape == (20, 30) and (iou >= 0).all() and (iou <= 1).all()
    torch.testing.assert_close(ops.box_iou(a, a).diagonal(), torch.ones(20))
