"""The C++ pre/post-processing against the numpy reference (runtime/reference.py) and pycocotools."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from boxseg.runtime import reference as ref
from boxseg.runtime._native import load_core
from runtime_helpers import assert_masks_match, random_image

# pycocotools' decode trips a numpy 2 deprecation inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def core():
    return load_core()


# --- the reference itself -------------------------------------------------------------------------------


def test_reference_resize_matches_hand_computed_half_pixel_bilinear() -> None:
    # 2 -> 4 pixels: source positions (i + 0.5) * 0.5 - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
    row = np.array([[[0, 0, 0], [100, 100, 100]]], np.uint8)
    out = ref.resize_bilinear(row, 1, 4)[0, :, 0]
    np.testing.assert_allclose(out, [0.0, 25.0, 75.0, 100.0])


def test_reference_plan_resize_keeps_aspect_ratio() -> None:
    assert ref.plan_resize(480, 640, 0, 0) == (480, 640)
    assert ref.plan_resize(480, 640, 800, 1333) == (800, 1067)
    assert ref.plan_resize(480, 640, 0, 320) == (240, 320)
    assert ref.plan_resize(1, 1000, 800, 100) == (1, 100)  # at least one pixel
    assert ref.padded_size([(240, 320), (100, 333)], 32) == (256, 352)


def test_reference_paste_is_empty_outside_the_box() -> None:
    mask = np.ones((8, 8), np.float32)
    out = ref.paste_mask(mask, np.array([2.5, 3.0, 10.2, 7.0]), 32, 32, 1.0, 1.0)
    assert out[3:7, 2:11].all()
    assert out.sum() == 4 * 9


# --- pre-processing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "min_size", "max_size"),
    [
        ([(37, 53)], 0, 0),  # no resize, pad only
        ([(37, 53)], 64, 0),  # upscale
        ([(120, 90)], 0, 50),  # downscale
        ([(30, 40), (41, 23), (64, 64)], 48, 80),  # batch of different sizes
    ],
)
def test_preprocess_float_matches_reference(core, sizes, min_size, max_size) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    got, got_sizes = core.preprocess(
        images, min_size, max_size, 32, "float32", False, [0, 0, 0], [1, 1, 1], 2
    )
    want, want_sizes = ref.preprocess(images, min_size, max_size, 32)
    assert [tuple(s) for s in got_sizes] == want_sizes
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.shape[2] % 32 == 0 and got.shape[3] % 32 == 0
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)


def test_preprocess_uint8_and_normalised_match_reference(core) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)]
    got, _ = core.preprocess(images, 70, 0, 16, "uint8", False, [0, 0, 0], [1, 1, 1], 1)
    want, _ = ref.preprocess(images, 70, 0, 16, "uint8")
    assert got.dtype == np.uint8
    exact, _ = ref.preprocess(images, 70, 0, 16, "float32")
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1
    # Only values within float32 rounding of a .5 tie may round the other way.
    ties = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
    assert np.all(ties[diff > 0])
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    got, _ = core.preprocess(images, 70, 0, 16, "float32", True, mean, std, 2)
    want, _ = ref.preprocess(images, 70, 0, 16, normalize=True, mean=mean, std=std)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.all(got[0, :, want.shape[2] - 1, :] == 0) or want.shape[2] == 70  # padding stays 0


def test_preprocess_reads_strided_views_without_copy_semantics_changing(core) -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (64, 90, 4), dtype=np.uint8)
    views = [base[::2, 1::3, :3], np.asfortranarray(base[:, :, 1:])]
    for view in views:
        assert not view.flags.c_contiguous
        got, _ = core.preprocess([view], 0, 0, 32, "float32", False, [0, 0, 0], [1, 1, 1], 1)
        want, _ = ref.preprocess([np.ascontiguousarray(view)], 0, 0, 32)
        np.testing.assert_array_equal(got, want)


# --- post-processing ------------------------------------------------------------------------------------


def _random_detections(rng: np.random.Generator, n: int, mh: int, mw: int, stride: int):
    """Smooth probability blobs and boxes in input pixels (some outside the image, one degenerate)."""
    yy, xx = np.mgrid[0:mh, 0:mw].astype(np.float32)
    masks = np.empty((n, mh, mw), np.float32)
    boxes = np.empty((n, 4), np.float32)
    for k in range(n):
        cy, cx = rng.uniform(0, mh), rng.uniform(0, mw)
        ry, rx = rng.uniform(1.5, mh / 2), rng.uniform(1.5, mw / 2)
        logits = 6 * (1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2)
        masks[k] = 1 / (1 + np.exp(-np.maximum(logits, -50)))
        boxes[k] = np.array([cx - rx, cy - ry, cx + rx, cy + ry]) * stride + rng.normal(0, 3, 4)
    boxes[0] = [-20, -10, mw * stride + 15, mh * stride + 40]  # beyond the image: clipped
    if n > 2:
        boxes[2] = [10.0, 10.0, 10.0, 30.0]  # zero width: empty mask
    return masks, boxes


@pytest.mark.parametrize(
    ("height", "width", "resized", "stride"),
    [
        (96, 128, (96, 128), 4),  # no resize
        (75, 100, (96, 128), 4),  # upscaled input
        (200, 300, (64, 96), 4),  # downscaled input
        (53, 77, (53, 77), 8),
    ],
)
def test_paste_masks_match_reference(core, height, width, resized, stride) -> None:
    rng = np.random.default_rng(height)
    ph, pw = ref.padded_size([resized], 32)
    mh, mw = ph // stride, pw // stride
    masks, boxes = _random_detections(rng, 12, mh, mw, stride)
    sy, sx = resized[0] / height, resized[1] / width
    got_boxes, got_masks = core.paste_masks(masks, boxes, height, width, sy, sx, stride, 0.5, False, 2)
    want_boxes = ref.rescale_boxes(boxes, sy, sx, height, width)
    np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4, rtol=0)
    want_masks = np.stack(
        [
            ref.paste_mask(masks[k], want_boxes[k], height, width, sy, sx, stride, 0.5)
            for k in range(len(masks))
        ]
    )
    assert_masks_match(got_masks, want_masks)
    assert not got_masks[2].any()  # the zero-width box
    assert got_masks[0].any()


def test_rle_is_byte_identical_to_pycocotools(core) -> None:
    rng = np.random.default_rng(7)
    height, width = 90, 110
    masks, boxes = _random_detections(rng, 10, 24, 28, 4)
    _, dense = core.paste_masks(masks, boxes, height, width, 1.0, 1.0, 4, 0.5, False, 2)
    _, rles = core.paste_masks(masks, boxes, height, width, 1.0, 1.0, 4, 0.5, True, 2)
    for k in range(len(masks)):
        expected = mask_utils.encode(np.asfortranarray(dense[k].astype(np.uint8)))
        assert rles[k]["size"] == [height, width]
        assert rles[k]["counts"].encode() == expected["counts"]
        np.testing.assert_array_equal(mask_utils.decode(rles[k]).astype(bool), dense[k])


@pytest.mark.parametrize("pattern", ["empty", "full", "random", "stripes", "first_pixel", "last_pixel"])
def test_rle_encoder_on_edge_patterns(core, pattern) -> None:
    rng = np.random.default_rng(11)
    h, w = 37, 29
    m = np.zeros((h, w), bool)
    if pattern == "full":
        m[:] = True
    elif pattern == "random":
        m = rng.random((h, w)) > 0.5
    elif pattern == "stripes":
        m[:, ::3] = True
    elif pattern == "first_pixel":
        m[0, 0] = True
    elif pattern == "last_pixel":
        m[-1, -1] = True
    expected = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]
    assert core.rle_encode(m).encode() == expected
    # A large image with long runs exercises multi-character counts and negative differences.
    big = np.zeros((1200, 900), bool)
    big[100:1100, 50:60] = True
    big[5:7, 500:890] = True
    assert (
        core.rle_encode(big).encode() == mask_utils.encode(np.asfortranarray(big.astype(np.uint8)))["counts"]
    )


def test_smooth_image_paste_is_identical_on_identity_geometry(core) -> None:
    # With scale 1 and stride 1 the paste is a plain threshold of the mask inside the box.
    rng = np.random.default_rng(5)
    prob = random_image(rng, 40, 50)[..., 0].astype(np.float32) / 255
    box = np.array([[3.0, 4.0, 45.0, 33.0]], np.float32)
    _, got = core.paste_masks(prob[None], box, 40, 50, 1.0, 1.0, 1, 0.5, False, 1)
    want = np.zeros((40, 50), bool)
    want[4:33, 3:45] = prob[4:33, 3:45] > 0.5
    np.testing.assert_array_equal(got[0], want)


def _border_and_tiny_boxes(mh: int, mw: int, stride: int) -> np.ndarray:
    """Input-frame boxes on the edge cases: touching and crossing each border, wholly outside, sub-pixel."""
    h, w = mh * stride, mw * stride
    return np.array(
        [
            [0.0, 0.0, w / 3, h / 3],  # touching the top-left corner
            [w * 0.6, h * 0.5, float(w), float(h)],  # touching the bottom-right corner
            [-7.5, h * 0.2, w * 0.4, h * 0.7],  # crossing the left border
            [w * 0.5, -3.2, w + 9.1, h * 0.6],  # crossing the top and right borders
            [w + 2.0, 1.0, w + 10.0, 9.0],  # wholly outside
            [w * 0.5 + 0.2, h * 0.5 + 0.3, w * 0.5 + 0.6, h * 0.5 + 0.9],  # tiny: under one pixel
            [w * 0.25 + 0.5, h * 0.25, w * 0.25 + 0.5, h * 0.25 + 6.0],  # zero width off the pixel grid
        ],
        np.float32,
    )


@pytest.mark.parametrize(
    ("height", "width", "resized", "stride", "n"),
    [
        (96, 128, (96, 128), 4, 12),  # no resize
        (75, 100, (96, 128), 4, 12),  # upscaled input
        (200, 300, (64, 96), 4, 12),  # downscaled input
        (53, 77, (53, 77), 8, 5),
        (60, 80, (48, 64), 4, 0),  # no detections
    ],
)
def test_paste_agrees_across_model_torch_contract_numpy_and_cpp(core, height, width, resized, stride, n) -> None:
    """The three mask pastes -- the model's torch one (eager prediction and evaluation), the contract's numpy one
    (the reference and the numpy backends) and the C++ core's -- give the same masks on one set of detections."""
    torch = pytest.importorskip("torch")
    from boxseg.contract import paste_masks as contract_paste
    from boxseg.model.postprocess import paste_masks as model_paste

    rng = np.random.default_rng(height + n)
    ph, pw = ref.padded_size([resized], 32)
    mh, mw = ph // stride, pw // stride
    masks, boxes = np.zeros((0, mh, mw), np.float32), np.zeros((0, 4), np.float32)
    if n:
        masks, boxes = _random_detections(rng, n, mh, mw, stride)
        extra = _border_and_tiny_boxes(mh, mw, stride)
        boxes = np.concatenate([boxes, extra])
        masks = np.concatenate([masks, np.full((len(extra), mh, mw), 0.9, np.float32)])  # all foreground
    sy, sx = resized[0] / height, resized[1] / width
    c_boxes, c_masks = contract_paste(masks, boxes, (height, width), resized, stride, 0.5)
    _, cpp_masks = core.paste_masks(masks, boxes, height, width, sy, sx, stride, 0.5, False, 2)
    t_masks = model_paste(torch.from_numpy(masks), torch.from_numpy(boxes), (height, width), resized, stride,
                          0.5).numpy()
    assert c_masks.shape == cpp_masks.shape == t_masks.shape == (len(boxes), height, width)
    if not n:
        return
    assert_masks_match(cpp_masks, c_masks)
    assert_masks_match(t_masks, c_masks)
    k = n  # the edge-case boxes follow the random ones; their masks are all foreground inside the box
    for i, box in enumerate(c_boxes[k:], start=k):
        x0, x1, y0, y1 = ref.box_pixels(box, height, width)
        assert int(c_masks[i].sum()) == (x1 - x0) * (y1 - y0)
    assert c_masks[k].any() and c_masks[k + 1].any() and c_masks[k + 2].any() and c_masks[k + 3].any()
    assert not c_masks[k + 4].any() and not t_masks[k + 4].any()  # wholly outside
    assert c_masks[k + 5].sum() >= 1 and (t_masks[k + 5] == c_masks[k + 5]).all()  # tiny: its pixel(s)
    # zero width off the pixel grid: no pixels; the model's paste used to fill the column floor(x)..ceil(x)
    assert not c_masks[k + 6].any() and not t_masks[k + 6].any() and not cpp_masks[k + 6].any()
