"""The segmentation checks accept every mask pycocotools encodes (they decode counts exactly as it does) and
name what is wrong with the rest."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from boxseg.data.segmentation import decode_rle_counts, segmentation_problem


def _runs(mask: np.ndarray) -> list[int]:
    """Column-major run lengths, starting with background (the RLE definition), computed independently."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


@pytest.mark.parametrize("seed", range(4))
def test_counts_decode_like_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        kind = rng.integers(0, 3)
        if kind == 0:
            mask = rng.random((h, w)) < rng.random()
        elif kind == 1:
            mask = np.zeros((h, w), bool)
            mask[rng.integers(0, h):, rng.integers(0, w):] = True
        else:
            mask = np.full((h, w), bool(rng.integers(0, 2)))
        counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        assert decode_rle_counts(counts).tolist() == _runs(mask)
        assert segmentation_problem({"size": [h, w], "counts": counts}, h, w) is None
        assert segmentation_problem({"size": [h, w], "counts": _runs(mask)}, h, w) is None


def test_large_runs_and_polygons_at_the_edge_are_valid() -> None:
    h, w = 2000, 3000  # runs up to 6 million pixels: multi-character runs with sign bits
    mask = np.zeros((h, w), bool)
    mask[1500:, 2500:] = True
    counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
    assert segmentation_problem({"size": [h, w], "counts": counts}, h, w) is None
    assert segmentation_problem([[-0.5, -0.5, w + 0.5, 0, w, h + 1.0]], h, w) is None


def test_predictions_skip_only_the_costly_counts_decoding() -> None:
    bad = {"size": [4, 4], "counts": "garbage!!~~"}
    assert "does not decode" in segmentation_problem(bad, 4, 4)
    assert segmentation_problem(bad, 4, 4, decode_counts=False) is None
    assert "RLE 'size' [4, 5]" in segmentation_problem({"size": [4, 5], "counts": "0"}, 4, 4, decode_counts=False)
