"""boxseg.contract: the one home of the image <-> graph rules, and every user agreeing with it."""

from __future__ import annotations

import numpy as np
import pytest

from boxseg import contract as C


def test_resize_rounds_halves_up() -> None:
    # 5 * 0.5 = 2.5 -> 3 (Python's round() gives 2: half to even)
    assert C.plan_resize(5, 8, 0, 4) == (3, 4)
    assert C.fit_size(5, 8, (4, 4)) == ((3, 4), 0.5)
    assert C.plan_resize(480, 640, 800, 1333) == (800, 1067)
    assert C.plan_resize(1, 1000, 800, 100) == (1, 100)  # at least one pixel
    with pytest.raises(ValueError, match="zero size"):
        C.plan_resize(0, 5, 10, 0)


def test_padding() -> None:
    assert [C.pad_to(v, 32) for v in (1, 32, 33, 64)] == [32, 32, 64, 64]
    assert C.padded_size([(240, 320), (100, 333)]) == (256, 352)


def test_letterbox_rounds_like_the_runtime() -> None:
    """export.images.letterbox used round() (half to even): a 5 x 8 image fitted in 4 x 4 became 2 rows, while
    the runtime, training and the bench resize it to 3. Its graph input and the rows its masks are pasted back to
    must be the contract's."""
    from boxseg.export.images import letterbox, letterbox_size

    image = np.full((5, 8, 3), 200, np.uint8)
    canvas, scale = letterbox(image, (4, 4), fill_canvas=False)
    assert scale == 0.5 and letterbox_size(5, 8, (4, 4)) == C.plan_resize(5, 8, 0, 4) == (3, 4)
    assert canvas.shape == (3, 32, 32)
    assert canvas[:, :3, :4].min() > 0 and not canvas[:, 3:].any() and not canvas[:, :, 4:].any()


@pytest.mark.parametrize(("h", "w"), [(5, 8), (75, 101), (333, 500), (480, 640), (1, 999)])
def test_every_resize_copy_follows_the_contract(h: int, w: int) -> None:
    pytest.importorskip("torch")
    from boxseg.bench.backends import preprocess_numpy
    from boxseg.train.data import scaled_size

    assert scaled_size(h, w, 100, 150) == C.plan_resize(h, w, 100, 150)
    _, sizes = preprocess_numpy([np.zeros((h, w, 3), np.uint8)], imgsz=64)
    assert sizes == [C.plan_resize(h, w, 0, 64)]


def test_constants_have_one_value() -> None:
    pytest.importorskip("torch")
    from boxseg.export import metadata, onnx
    from boxseg.export.graph import OUTPUT_NAMES

    from boxseg.model.condinst import MASK_OUT_STRIDE

    assert MASK_OUT_STRIDE == C.MASK_STRIDE == metadata.MASK_STRIDE
    assert onnx.SIZE_DIVISOR == metadata.SIZE_DIVISOR == C.SIZE_DIVISOR
    assert OUTPUT_NAMES == C.OUTPUT_NAMES


def test_paste_masks_frames_and_empty_input() -> None:
    boxes, masks = C.paste_masks(np.zeros((0, 4, 4), np.float32), np.zeros((0, 4), np.float32), (10, 12), (16, 16))
    assert boxes.shape == (0, 4) and masks.shape == (0, 10, 12) and masks.dtype == bool
    # input 32 x 32 = original 16 x 16 resized x2: boxes halve, clipped to the image
    prob = np.ones((1, 8, 8), np.float32)
    boxes, masks = C.paste_masks(prob, np.array([[4.0, 8.0, 40.0, 20.0]], np.float32), (16, 16), (32, 32))
    np.testing.assert_allclose(boxes, [[2.0, 4.0, 16.0, 10.0]])
    assert masks[0, 4:10, 2:16].all() and masks[0].sum() == 6 * 14
