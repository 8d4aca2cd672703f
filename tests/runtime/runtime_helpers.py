"""Helpers shared by the runtime tests (a unique module name: tests/ folders are not packages)."""

from __future__ import annotations

import numpy as np


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random RGB image (blurry blobs), so masks have realistic, not salt-and-pepper, edges."""
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3)).astype(np.float64)
    ys = np.linspace(0, coarse.shape[0] - 1, height)
    xs = np.linspace(0, coarse.shape[1] - 1, width)
    y0 = np.floor(ys).astype(int).clip(0, coarse.shape[0] - 2)
    x0 = np.floor(xs).astype(int).clip(0, coarse.shape[1] - 2)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - wx) + coarse[y0][:, x0 + 1] * wx
    bottom = coarse[y0 + 1][:, x0] * (1 - wx) + coarse[y0 + 1][:, x0 + 1] * wx
    return np.clip(top * (1 - wy) + bottom * wy, 0, 255).astype(np.uint8)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_masks_match(actual: np.ndarray, expected: np.ndarray) -> None:
    """IoU >= 0.99 per mask, allowing a couple of boundary pixels to round the other way on tiny masks."""
    assert actual.shape == expected.shape and actual.dtype == np.bool_
    for k in range(actual.shape[0]):
        differing = int(np.logical_xor(actual[k], expected[k]).sum())
        assert mask_iou(actual[k], expected[k]) >= 0.99 or differing <= 2, (k, differing)
