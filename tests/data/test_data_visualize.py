"""Overlay drawing: masks tint only their pixels, boxes and labels are drawn, bad shapes are refused."""

from __future__ import annotations

import numpy as np
import pytest

from boxseg.data.visualize import MASK_ALPHA, PALETTE, draw_instances


def test_masks_tint_only_their_pixels() -> None:
    img = np.full((40, 50, 3), 100, np.uint8)
    masks = np.zeros((1, 40, 50), bool)
    masks[0, 20:30, 20:30] = True
    out = np.asarray(draw_instances(img, None, [2], None, masks, ["a", "b", "c"]))
    expected = np.rint(100 * (1 - MASK_ALPHA) + np.asarray(PALETTE[2]) * MASK_ALPHA)
    np.testing.assert_array_equal(out[25, 25], expected)
    np.testing.assert_array_equal(out[5, 5], [100, 100, 100])
    assert img[25, 25, 0] == 100  # the input is not modified


def test_boxes_and_labels_are_drawn() -> None:
    img = np.zeros((60, 80, 3), np.uint8)
    out = np.asarray(draw_instances(img, np.array([[20, 20, 50, 40]]), [0], [0.9], None, ["shape"]))
    np.testing.assert_array_equal(out[30, 20], PALETTE[0])  # left edge of the outline
    assert (out[30, 35] == 0).all()  # inside the box, no mask: untouched
    assert (out[9:20, 20:50] != 0).any()  # label above the box


def test_no_instances_returns_the_image() -> None:
    img = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    out = draw_instances(img, np.zeros((0, 4)), np.zeros(0, int), np.zeros(0), np.zeros((0, 10, 12), bool), [])
    np.testing.assert_array_equal(np.asarray(out), img)


def test_bad_shapes_are_refused() -> None:
    img = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="masks must be"):
        draw_instances(img, None, [0], None, np.zeros((1, 12, 10), bool), ["a"])
    with pytest.raises(ValueError, match="uint8"):
        draw_instances(img.astype(np.float32), None, [], None, None, [])
