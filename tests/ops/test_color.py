"""Fused color_similarity (CPU kernel) against the float64 reference."""

from __future__ import annotations

import pytest
import torch
from ops_testdata import smooth_images

from boxseg.ops import library
from boxseg.ops import reference as R

pytestmark = pytest.mark.usefixtures("fused_cpu")


@pytest.mark.parametrize("shape", [(2, 13, 17), (1, 1, 9), (1, 8, 1), (1, 1, 1), (0, 5, 5)])
def test_matches_reference_float64(shape: tuple[int, int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(shape[0], 3, shape[1], shape[2], generator=gen, dtype=torch.float64) * 255
    got = library.color_similarity(img, 3, 2, 2.0)
    assert got.shape == (shape[0], 8, shape[1], shape[2])
    torch.testing.assert_close(got, R.color_similarity(img, 3, 2, 2.0), atol=1e-12, rtol=1e-10)


def test_float32_smooth_images_and_other_kernels() -> None:
    gen = torch.Generator().manual_seed(1)
    img = smooth_images(2, 20, 24, gen)
    for k, d, theta in [(3, 2, 2.0), (5, 1, 3.0), (3, 1, 0.5)]:
        ref = R.color_similarity(img, k, d, theta)
        got = library.color_similarity(img.float(), k, d, theta)
        assert got.dtype == torch.float32
        # float32 LAB values reach ~100, so distances carry ~1e-5 absolute rounding error (amplified by 1/theta).
        torch.testing.assert_close(got.double(), ref, atol=3e-4, rtol=1e-4)
    # The smooth images give both similar and dissimilar neighbours.
    sim = R.color_similarity(img)
    assert 0.2 < (sim >= 0.3).double().mean() < 0.95


def test_uniform_image_is_all_similar_inside_and_zero_outside() -> None:
    img = torch.full((1, 3, 6, 7), 77.0, dtype=torch.float64)
    got = library.color_similarity(img, 3, 2, 2.0)
    for j, (dy, dx) in enumerate(R.neighbour_offsets(3, 2)):
        ys, xs = slice(max(0, -dy), min(6, 6 - dy)), slice(max(0, -dx), min(7, 7 - dx))
        inside = torch.zeros(6, 7, dtype=torch.bool)
        inside[ys, xs] = True
        assert torch.equal(got[0, j][inside], torch.ones(int(inside.sum()), dtype=torch.float64))
        assert got[0, j][~inside].abs().sum() == 0


def test_opcheck_and_bad_input() -> None:
    img = torch.rand(1, 3, 5, 6, dtype=torch.float64) * 255
    torch.library.opcheck(torch.ops.boxseg.color_similarity.default, (img, 3, 2, 2.0))
    with pytest.raises(RuntimeError, match="images must have shape"):
        library.color_similarity(torch.zeros(1, 4, 5, 5), 3, 2, 2.0)
