"""Backend building blocks: numpy pre/post against their pure-PyTorch references; backend availability."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from boxseg.bench.backends import (
    OrtBackend,
    RuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    paste_masks_numpy,
    paste_masks_torch,
    preprocess_numpy,
    preprocess_torch,
)


def random_case(scale: float, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    rng = np.random.default_rng(seed)
    h, w = 75, 101  # original image
    ih, iw = round(h * scale), round(w * scale)  # resized input before padding
    masks = rng.uniform(0, 1, (7, int(np.ceil(ih / 32)) * 8, int(np.ceil(iw / 32)) * 8)).astype(np.float32)
    x0, y0 = rng.uniform(-10, iw * 0.7, 7), rng.uniform(-10, ih * 0.7, 7)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0, 60, 7), y0 + rng.uniform(0, 60, 7)], 1).astype(np.float32)
    boxes[0] = [0.0, 4.7, 0.0, 20.0]  # empty box (zero width on a pixel edge)
    boxes[1] = [-20, -20, iw + 20, ih + 20]  # box beyond the image
    return masks, boxes, (h, w), (ih, iw)


def close_enough(fast: np.ndarray, ref: np.ndarray) -> bool:
    # float32 vs float64 index arithmetic may flip a pixel whose value sits on the threshold; nothing more
    return int((fast != ref).sum()) <= max(2, int(1e-3 * ref.size))


@pytest.mark.parametrize(("scale", "seed"), [(1.0, 0), (0.5, 1), (1.37, 2), (0.8, 3)])
def test_paste_numpy_matches_torch_reference(scale: float, seed: int) -> None:
    masks, boxes, out_hw, in_hw = random_case(scale, seed)
    fast = paste_masks_numpy(masks, boxes, out_hw, in_hw)
    ref = paste_masks_torch(torch.from_numpy(masks), torch.from_numpy(boxes), out_hw, in_hw).numpy()
    assert fast.shape == ref.shape == (7, *out_hw) and fast.dtype == bool
    assert not fast[0].any() and not ref[0].any()
    assert fast[1].any() and fast.sum() > 100
    assert close_enough(fast, ref)


@pytest.mark.parametrize(("scale", "seed"), [(1.0, 4), (0.6, 5), (1.5, 6)])
def test_paste_numpy_matches_model_postprocess(scale: float, seed: int) -> None:
    """The ORT baseline's numpy paste and the eager predictor's paste (model package) agree."""
    if importlib.util.find_spec("boxseg.model.postprocess") is None:
        pytest.skip("boxseg.model.postprocess is not built yet (model issue)")
    from boxseg.model.postprocess import paste_masks

    masks, boxes, out_hw, in_hw = random_case(scale, seed)
    fast = paste_masks_numpy(masks, boxes, out_hw, in_hw)
    model = paste_masks(torch.from_numpy(masks), torch.from_numpy(boxes), out_hw, in_hw).numpy()
    assert close_enough(fast, model)


@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (40, 40)])
def test_preprocess_numpy_matches_torch(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
    x_np, s_np = preprocess_numpy(imgs, imgsz=64)
    x_t, s_t = preprocess_torch(imgs, imgsz=64, device="cpu")
    assert x_np.shape == tuple(x_t.shape) and x_np.shape[2] % 32 == 0 and x_np.shape[3] % 32 == 0
    assert s_np == s_t and max(s_np[0]) == 64
    if s_np[0] == shape:  # no resize: identical
        np.testing.assert_array_equal(x_np, x_t.numpy())
    else:  # Pillow vs torch bilinear differ a little in rounding and filtering
        assert np.abs(x_np - x_t.numpy()).mean() < 40.0
    h, w = s_np[0]
    assert not x_np[:, :, h:, :].any() and not x_np[:, :, :, w:].any()  # zero padding


def test_preprocess_resizes_long_side() -> None:
    img = np.full((30, 40, 3), 200, np.uint8)
    x, sizes = preprocess_numpy([img], imgsz=80)
    assert sizes == [(60, 80)] and x.shape == (1, 3, 64, 96)
    assert np.allclose(x[0, :, :60, :80], 200.0) and not x[0, :, 60:].any()


def test_availability_reasons(tmp_path: Path, tiny_onnx: Path) -> None:
    fake_pt = tmp_path / "nothing.pt"
    fake_pt.write_bytes(b"not a checkpoint")
    assert OrtBackend(fake_pt).available() == (False, "needs an ONNX file, got nothing.pt")
    assert OrtBackend(tmp_path / "missing.onnx").available()[0] is False
    assert OrtBackend(tiny_onnx).available() == (True, "")
    ok, reason = TorchBackend(tiny_onnx).available()
    assert not ok and "needs a checkpoint (.pt)" in reason
    ok, reason = TorchBackend(fake_pt).available()
    assert not ok and "cannot build the model from nothing.pt" in reason
    ok, reason = RuntimeBackend(fake_pt).available()
    assert not ok and reason
    ok, reason = TensorRTBackend(tiny_onnx).available()
    if not ok:
        assert "tensorrt" in reason or "CUDA" in reason
