"""Fused pairwise affinity loss (CPU kernel) against the float64 unfold reference, plus gradcheck and opcheck."""

from __future__ import annotations

import pytest
import torch
from ops_testdata import random_boxes, smooth_images

from boxseg.ops import library
from boxseg.ops import reference as R

pytestmark = pytest.mark.usefixtures("fused_cpu")


def fused_loss(z, sim, idx, boxes, tau=0.3, dilation=2, with_grad=True):
    return library.pairwise_affinity_loss(z, sim, idx, boxes, tau, dilation, with_grad)[0]


def compare(z: torch.Tensor, sim: torch.Tensor, idx: torch.Tensor, boxes: torch.Tensor, tau: float = 0.3,
            dilation: int = 2, atol: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused loss/grad in z's dtype vs the float64 reference, with the gradient computed in the forward pass and by
    the separate backward kernel (the two must agree bit for bit); returns the fused (loss, grad)."""
    zr = z.detach().double().requires_grad_()
    ref = R.pairwise_affinity_loss(zr, sim.double(), idx, boxes, tau, dilation)
    (ref_grad,) = torch.autograd.grad(ref, zr)
    results = []
    for with_grad in (True, False):
        zf = z.detach().clone().requires_grad_()
        loss = fused_loss(zf, sim, idx, boxes, tau, dilation, with_grad)
        (grad,) = torch.autograd.grad(loss, zf)
        assert loss.dtype == z.dtype and grad.shape == z.shape
        assert loss.double().item() == pytest.approx(ref.item(), abs=atol, rel=atol)
        torch.testing.assert_close(grad.double(), ref_grad, atol=atol, rtol=atol)
        results.append((loss, grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    return results[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_inputs_float64(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    b, n, h, w = 2, 5, 17, 23
    sim = R.color_similarity(smooth_images(b, h, w, gen))
    z = torch.randn(n, h, w, generator=gen, dtype=torch.float64) * 4
    idx = torch.randint(0, b, (n,), generator=gen)
    loss, _ = compare(z, sim, idx, random_boxes(n, h, w, gen))
    assert loss.item() > 0


def test_random_inputs_float32() -> None:
    gen = torch.Generator().manual_seed(4)
    sim = R.color_similarity(smooth_images(2, 21, 30, gen)).float()
    z = (torch.randn(6, 21, 30, generator=gen) * 3).float()
    compare(z, sim, torch.tensor([0, 1, 0, 1, 1, 0]), random_boxes(6, 21, 30, gen), atol=2e-5)


def test_no_instances() -> None:
    z = torch.zeros(0, 8, 9, dtype=torch.float64, requires_grad=True)
    sim = torch.ones(1, 8, 8, 9, dtype=torch.float64)
    loss, count, _ = library.pairwise_affinity_loss(z, sim, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), 0.3,
                                                   2, True)
    loss.backward()
    assert loss.item() == 0.0 and count.item() == 0 and z.grad.shape == (0, 8, 9)


@pytest.mark.parametrize("shape", [(1, 13), (11, 1), (1, 1), (2, 2)])
def test_thin_grids(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(5)
    h, w = shape
    sim = R.color_similarity(smooth_images(1, h, w, gen))
    z = torch.randn(3, h, w, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, w, h], [-2.0, -2.0, w + 2.0, h + 2.0], [0.2, 0.2, 0.8, 0.8]])
    compare(z, sim, torch.zeros(3, dtype=torch.long), boxes)


def test_boxes_partly_and_wholly_outside() -> None:
    gen = torch.Generator().manual_seed(6)
    h, w = 12, 15
    sim = torch.ones(1, 8, h, w, dtype=torch.float64)
    z = torch.randn(4, h, w, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[-5.0, -5.0, 3.0, 4.0], [10.0, 8.0, 40.0, 30.0], [20.0, 20.0, 30.0, 30.0],
                          [-9.0, -9.0, -1.0, -1.0]])
    compare(z, sim, torch.zeros(4, dtype=torch.long), boxes)
    # Only instances with no pixel inside the grid: no triple qualifies -> 0 with zero gradient.
    loss, grad = compare(z[2:], sim, torch.zeros(2, dtype=torch.long), boxes[2:])
    assert loss.item() == 0.0 and grad.abs().sum() == 0


def test_all_similar_and_all_dissimilar_colour() -> None:
    gen = torch.Generator().manual_seed(7)
    h, w = 10, 12
    flat = torch.full((1, 3, h, w), 128.0, dtype=torch.float64)
    sim = R.color_similarity(flat)  # 1 for every in-image neighbour, 0 outside
    assert sim.max() == 1.0
    z = torch.randn(2, h, w, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, w, h], [2.0, 3.0, 9.0, 8.0]])
    loss, _ = compare(z, sim, torch.zeros(2, dtype=torch.long), boxes)
    _, count, _ = library.pairwise_affinity_loss(z, sim, torch.zeros(2, dtype=torch.long), boxes, 0.3, 2)
    # Every in-image neighbour of every in-box pixel counts.
    inside = R.box_masks(boxes, h, w)
    expected = 0
    for dy, dx in R.neighbour_offsets(3, 2):
        ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
        expected += int(inside[:, ys, xs].sum())
    assert count.item() == expected
    assert loss.item() > 0
    dissimilar = torch.zeros_like(sim)
    loss0, grad0 = compare(z, dissimilar, torch.zeros(2, dtype=torch.long), boxes)
    assert loss0.item() == 0.0 and grad0.abs().sum() == 0


def test_extreme_logits_stay_finite_and_match() -> None:
    gen = torch.Generator().manual_seed(8)
    h, w = 9, 11
    sim = torch.ones(1, 8, h, w, dtype=torch.float64)
    z = torch.sign(torch.randn(2, h, w, generator=gen, dtype=torch.float64)) * 400  # P_same underflows
    loss, grad = compare(z, sim, torch.zeros(2, dtype=torch.long), torch.tensor([[0.0, 0, w, h]] * 2))
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and loss.item() > 100
    zf = torch.sign(torch.randn(2, h, w, generator=gen)) * 60  # float32 underflow branch
    lf, gf = compare(zf.float(), sim.float(), torch.zeros(2, dtype=torch.long), torch.tensor([[0.0, 0, w, h]] * 2),
                     atol=1e-4)
    assert torch.isfinite(lf) and torch.isfinite(gf).all()


def test_kernel_size_5_and_dilation_1() -> None:
    gen = torch.Generator().manual_seed(9)
    img = smooth_images(2, 14, 16, gen)
    z = torch.randn(3, 14, 16, generator=gen, dtype=torch.float64)
    boxes = random_boxes(3, 14, 16, gen)
    for k, d in [(5, 1), (3, 1), (5, 2)]:
        sim = R.color_similarity(img, kernel_size=k, dilation=d)
        compare(z, sim, torch.tensor([0, 1, 1]), boxes, tau=0.2, dilation=d)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_float64(seed: int) -> None:
    gen = torch.Generator().manual_seed(10 + seed)
    h, w = 7, 9
    sim = R.color_similarity(smooth_images(2, h, w, gen))
    z = (torch.randn(3, h, w, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    idx = torch.tensor([0, 1, 0])
    boxes = random_boxes(3, h, w, gen)
    assert torch.autograd.gradcheck(lambda t: fused_loss(t, sim, idx, boxes), (z,))


def test_result_independent_of_thread_count() -> None:
    gen = torch.Generator().manual_seed(11)
    sim = R.color_similarity(smooth_images(2, 40, 50, gen)).float()
    z = torch.randn(7, 40, 50, generator=gen).requires_grad_()
    idx = torch.randint(0, 2, (7,), generator=gen)
    boxes = random_boxes(7, 40, 50, gen)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        loss = fused_loss(z, sim, idx, boxes)
        (grad,) = torch.autograd.grad(loss, z)
        results.append((loss, grad))
    torch.set_num_threads(2)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_bad_arguments_raise_clear_errors() -> None:
    z = torch.zeros(2, 5, 5)
    with pytest.raises(RuntimeError, match="img_idx"):
        fused_loss(z, torch.zeros(1, 8, 5, 5), torch.tensor([0, 3]), torch.zeros(2, 4))
    with pytest.raises(RuntimeError, match="color_sim"):
        fused_loss(z, torch.zeros(1, 7, 5, 5), torch.tensor([0, 0]), torch.zeros(2, 4))
    with pytest.raises(RuntimeError, match="boxes"):
        fused_loss(z, torch.zeros(1, 8, 5, 5), torch.tensor([0, 0]), torch.zeros(3, 4))


def test_opcheck_registration() -> None:
    gen = torch.Generator().manual_seed(12)
    sim = R.color_similarity(smooth_images(1, 6, 7, gen))
    z = torch.randn(2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    # with_grad=False: the traceable form (boxseg.ops uses it under torch.compile); True is eager-only (see library).
    args = (z, sim, torch.tensor([0, 0]), torch.tensor([[0.0, 0, 7, 6], [1.0, 1, 4, 5]]), 0.3, 2, False)
    torch.library.opcheck(torch.ops.boxseg.pairwise_affinity_loss.default, args)


def test_gradient_from_forward_survives_a_second_backward() -> None:
    """The forward's gradient is consumed by the first backward; retain_graph's second backward recomputes it."""
    gen = torch.Generator().manual_seed(13)
    sim = R.color_similarity(smooth_images(1, 9, 10, gen))
    z = torch.randn(2, 9, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0.0, 0, 10, 9], [2.0, 1, 7, 8]])
    loss = fused_loss(z, sim, torch.tensor([0, 0]), boxes) * 3.0
    (g1,) = torch.autograd.grad(loss, z, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, z)
    assert torch.equal(g1, g2) and g1.abs().sum() > 0


def test_public_op_uses_the_forward_gradient_only_when_needed() -> None:
    from boxseg import ops

    gen = torch.Generator().manual_seed(14)
    sim = R.color_similarity(smooth_images(1, 9, 10, gen))
    z = torch.randn(2, 9, 10, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0, 10, 9], [2.0, 1, 7, 8]])
    idx = torch.tensor([0, 0])
    with torch.no_grad():
        plain = ops.pairwise_affinity_loss(z.requires_grad_(), sim, idx, boxes)
    z.requires_grad_(False)
    assert torch.equal(plain, ops.pairwise_affinity_loss(z, sim, idx, boxes))
    zg = z.clone().requires_grad_()
    loss = ops.pairwise_affinity_loss(zg, sim, idx, boxes)
    loss.backward()
    assert torch.equal(loss.detach(), plain) and zg.grad.abs().sum() > 0


@pytest.mark.parametrize(("k", "dilation"), [(3, 2), (5, 2), (3, 1)])
def test_regions_split_into_several_row_blocks(k: int, dilation: int) -> None:
    """Tall, narrow grids: an instance's region becomes several row-block tasks, so the gradient of pairs across a
    block boundary goes through the halo buffer; also saturated logits (underflow pass), a 1-pixel box, boxes over
    the borders, float32 and float64, and the same bits with 1 and 2 threads (the work is large enough to split)."""
    gen = torch.Generator().manual_seed(15 + k + dilation)
    h, w = 700, 16  # 4096 pixels per task -> at most 256 rows of a 16-wide region
    sim = R.color_similarity(smooth_images(2, h, w, gen), kernel_size=k, dilation=dilation)
    z = torch.randn(5, h, w, generator=gen, dtype=torch.float64) * 3
    z[1] = torch.sign(z[1]) * 80  # P_same ~ e^-160 wherever neighbours disagree in sign
    boxes = torch.tensor([[-4.0, -9.0, 20.0, 720.0], [0.0, 3.0, 16.0, 690.0], [5.2, 300.1, 5.8, 300.9],
                          [2.0, 250.0, 11.0, 520.0], [-1.0, 100.0, 9.0, 700.0]])
    idx = torch.tensor([0, 1, 1, 0, 1])
    compare(z, sim, idx, boxes, dilation=dilation)
    compare(z.float(), sim.float(), idx, boxes, dilation=dilation, atol=2e-5)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        zz = z.float().requires_grad_()
        loss = fused_loss(zz, sim.float(), idx, boxes, dilation=dilation)
        (grad,) = torch.autograd.grad(loss, zz)
        results.append((loss, grad))
    torch.set_num_threads(2)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
