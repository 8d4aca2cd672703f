"""CUDA kernels against the float64 references (run only where torch sees a GPU)."""

from __future__ import annotations

import pytest
import torch
from ops_testdata import random_boxes, smooth_images

from boxseg.ops import _build, library
from boxseg.ops import reference as R

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module", autouse=True)
def _cuda_kernels() -> None:
    _build.ensure("cuda")


def test_color_similarity_cuda() -> None:
    img = smooth_images(2, 33, 41, torch.Generator().manual_seed(0))
    got = library.color_similarity(img.cuda(), 3, 2, 2.0)
    torch.testing.assert_close(got.cpu(), R.color_similarity(img), atol=1e-12, rtol=1e-10)
    got32 = library.color_similarity(img.float().cuda(), 3, 2, 2.0)
    torch.testing.assert_close(got32.cpu().double(), R.color_similarity(img), atol=3e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
def test_pairwise_cuda(dtype: torch.dtype, atol: float) -> None:
    gen = torch.Generator().manual_seed(1)
    b, n, h, w = 2, 9, 37, 45
    sim = R.color_similarity(smooth_images(b, h, w, gen))
    z = torch.randn(n, h, w, generator=gen, dtype=torch.float64) * 4
    z[0] = z[0].sign() * 300  # underflow branch
    idx = torch.randint(0, b, (n,), generator=gen)
    boxes = random_boxes(n, h, w, gen)
    zr = z.clone().requires_grad_()
    ref = R.pairwise_affinity_loss(zr, sim, idx, boxes)
    (ref_grad,) = torch.autograd.grad(ref, zr)
    for with_grad in (False, True):  # gradient from the backward kernel / from the forward (forward_backward)
        zc = z.to(dtype).cuda().requires_grad_()
        loss = library.pairwise_affinity_loss(zc, sim.to(dtype).cuda(), idx.cuda(), boxes.cuda(), 0.3, 2,
                                              with_grad)[0]
        (grad,) = torch.autograd.grad(loss, zc)
        assert loss.item() == pytest.approx(ref.item(), abs=atol, rel=atol)
        torch.testing.assert_close(grad.cpu().double(), ref_grad, atol=atol, rtol=atol)


def test_pairwise_cuda_gradcheck_and_empty() -> None:
    gen = torch.Generator().manual_seed(2)
    sim = R.color_similarity(smooth_images(1, 6, 8, gen)).cuda()
    z = torch.randn(2, 6, 8, generator=gen, dtype=torch.float64).cuda().requires_grad_()
    idx = torch.tensor([0, 0]).cuda()
    boxes = torch.tensor([[0.0, 0, 8, 6], [1.0, 2, 5, 9]]).cuda()
    assert torch.autograd.gradcheck(lambda t: library.pairwise_affinity_loss(t, sim, idx, boxes, 0.3, 2)[0], (z,))
    empty = torch.zeros(0, 6, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    loss, count, _ = library.pairwise_affinity_loss(empty, sim, idx[:0], boxes[:0], 0.3, 2)
    loss.backward()
    assert loss.item() == 0 and count.item() == 0


def test_fusion_cuda() -> None:
    gen = torch.Generator().manual_seed(3)
    g, h, w = 9, 30, 34
    gt_idx = torch.randint(0, g, (40,), generator=gen)
    probs = torch.rand(40, h, w, generator=gen, dtype=torch.float64) ** 0.5
    s = torch.rand(40, generator=gen, dtype=torch.float64)
    u = torch.rand(40, generator=gen, dtype=torch.float64)
    boxes = random_boxes(g, h, w, gen)
    ref = R.fuse_candidate_masks(probs, gt_idx, s, u, boxes)
    got = library.fuse_candidate_masks(probs.cuda(), gt_idx.cuda(), s.cuda(), u.cuda(), boxes.cuda(), 0.5)
    assert torch.equal(got[2].cpu(), ref[2])
    torch.testing.assert_close(got[0].cpu(), ref[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(got[1].cpu(), ref[1], atol=1e-12, rtol=1e-12)


def test_nms_cuda() -> None:
    gen = torch.Generator().manual_seed(4)
    xy = torch.rand(3000, 2, generator=gen) * 300
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=gen) * 80 + 1], 1)
    scores = (torch.rand(3000, generator=gen) * 20).round() / 20  # ties
    cls = torch.randint(0, 80, (3000,), generator=gen)
    got = library.batched_nms(boxes.cuda(), scores.cuda(), cls.cuda(), 0.5)
    assert torch.equal(got.cpu(), R.batched_nms(boxes, scores, cls, 0.5))
    empty = library.batched_nms(boxes[:0].cuda(), scores[:0].cuda(), cls[:0].cuda(), 0.5)
    assert empty.numel() == 0
