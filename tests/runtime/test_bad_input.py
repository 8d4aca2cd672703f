"""Bad inputs and bad models raise clear Python exceptions, never crash; image input fuzzed with hypothesis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from boxseg.runtime import Predictor
from boxseg.runtime._native import load_core
from boxseg.runtime.testing import default_metadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((20, 30, 3), np.float32), ValueError, "expected dtype uint8"),
        (np.zeros((20, 30, 3), np.int64), ValueError, "expected dtype uint8"),
        (np.zeros((20, 30), np.uint8), ValueError, r"expected shape \(H, W, 3\)"),
        (np.zeros((20, 30, 4), np.uint8), ValueError, r"expected shape \(H, W, 3\)"),
        (np.zeros((20, 30, 1), np.uint8), ValueError, r"expected shape \(H, W, 3\)"),
        (np.zeros((1, 20, 30, 3), np.uint8), ValueError, r"expected shape \(H, W, 3\)"),
        (np.zeros((0, 30, 3), np.uint8), ValueError, "zero-size image"),
        (np.zeros((20, 0, 3), np.uint8), ValueError, "zero-size image"),
        ([[1, 2, 3]], TypeError, "expected a numpy uint8 array"),
        ("image.png", TypeError, "expected a numpy uint8 array"),
    ],
)
def test_bad_images_raise_clear_errors(predictor, image, error, message) -> None:
    with pytest.raises(error, match=message):
        predictor(image)


def test_bad_batches_raise_clear_errors(predictor) -> None:
    with pytest.raises(ValueError, match="no images"):
        predictor.predict_batch([])
    with pytest.raises(ValueError, match="image 1: expected dtype uint8"):
        predictor.predict_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float64)])
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        predictor.predict_batch(np.zeros((8, 8, 3), np.uint8))


def test_non_contiguous_images_are_handled_not_rejected(predictor) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    wide = np.zeros((80, 120, 5), np.uint8)
    wide[..., 1:4] = base
    views = [base[:, ::-1], base[::-1], np.asfortranarray(base), wide[..., 1:4], base.transpose(1, 0, 2)]
    for view in views:
        want = predictor(np.ascontiguousarray(view))
        got = predictor(view)
        np.testing.assert_array_equal(got["boxes"], want["boxes"])
        np.testing.assert_array_equal(got["masks"], want["masks"])
    readonly = base.copy()
    readonly.flags.writeable = False
    assert len(predictor(readonly)["scores"]) == len(predictor(base)["scores"])


def test_missing_and_corrupt_model_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Predictor(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe" * 10)
    with pytest.raises(RuntimeError, match="could not load the model"):
        Predictor(corrupt)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises((RuntimeError, ValueError), match="empty.onnx"):
        Predictor(empty)


def test_models_without_boxseg_metadata_or_outputs_are_rejected(make_model) -> None:
    with pytest.raises(ValueError, match="not a boxseg model.*boxseg.format"):
        Predictor(make_model("no_metadata", metadata={}))
    with pytest.raises(ValueError, match="'boxseg.format' is 'other'"):
        Predictor(make_model("wrong_format", metadata={"boxseg.format": "other"}))
    with pytest.raises(ValueError, match="output 'masks' is missing"):
        Predictor(make_model("no_masks_output", drop_output="masks"))
    bad = default_metadata(8, ["a"], "float32 NCHW RGB 0-255")
    bad["boxseg.class_names"] = "['single quotes']"
    with pytest.raises(ValueError, match="boxseg.class_names.*invalid JSON"):
        Predictor(make_model("bad_class_names", metadata=bad))


def test_metadata_parser_edge_cases() -> None:
    core = load_core()
    md = default_metadata(4, ['quote " and \\ slash', "caf\u00e9", "\U0001f600"], "float32 NCHW RGB 0-255")
    info = core.parse_model_info(md, "m.onnx")
    assert info["class_names"] == json.loads(md["boxseg.class_names"])
    assert info["mean"] == pytest.approx([123.675, 116.28, 103.53])
    md_ascii = dict(md, **{"boxseg.class_names": json.dumps(["caf\u00e9", "\U0001f600"], ensure_ascii=True)})
    assert core.parse_model_info(md_ascii, "m.onnx")["class_names"] == ["caf\u00e9", "\U0001f600"]
    for key, value, message in [
        ("boxseg.size_divisor", "thirty-two", "expected an integer"),
        ("boxseg.mask_stride", "5", "positive divisor of size_divisor"),
        ("boxseg.mean", "[1, 2]", "expected 3 numbers"),
        ("boxseg.std", "[1, 0, 1]", "must be > 0"),
        ("boxseg.mask_threshold", "nan", "expected a number"),
        ("boxseg.class_names", '["a", ', "invalid JSON"),
    ]:
        with pytest.raises(ValueError, match=message):
            core.parse_model_info(dict(md, **{key: value}), "m.onnx")


def test_bad_arguments(model_path) -> None:
    with pytest.raises(ValueError, match="device must be"):
        Predictor(model_path, device="gpu")
    with pytest.raises(ValueError, match="threads must be"):
        Predictor(model_path, threads=-1)
    with pytest.raises(ValueError, match="mask_threshold"):
        Predictor(model_path, mask_threshold=2.0)


def test_cuda_without_the_cuda_provider_says_how_to_get_it(model_path) -> None:
    core = load_core()
    if "CUDAExecutionProvider" in core.onnxruntime_providers():
        pytest.skip("the installed onnxruntime has the CUDA provider")
    with pytest.raises(RuntimeError, match=r"no CUDA provider \(install boxseg\[gpu\]\)"):
        Predictor(model_path, device="cuda")


def test_a_tensorrt_engine_without_the_backend_is_a_clear_error(tmp_path) -> None:
    core = load_core()
    if core.has_tensorrt:
        pytest.skip("this build has the TensorRT backend")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(ValueError, match="BOXSEG_WITH_TENSORRT=ON"):
        Predictor(engine)


_DTYPES = [np.uint8, np.int8, np.uint16, np.float32, np.float64, np.bool_]


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    ndim = draw(st.sampled_from([2, 3, 3, 3, 4]))
    shape = [draw(st.integers(0, 40)) for _ in range(ndim)]
    if ndim == 3 and draw(st.booleans()):
        shape[2] = 3
    dtype = draw(st.sampled_from(_DTYPES + [np.uint8] * 3))
    seed = draw(st.integers(0, 2**16))
    arr = np.random.default_rng(seed).integers(0, 256, shape).astype(dtype)
    if arr.ndim >= 2 and draw(st.booleans()):  # a strided or flipped view
        step = draw(st.sampled_from([1, 2, -1]))
        arr = arr[::step, :: draw(st.sampled_from([1, 2, -1]))]
    return arr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=images())
def test_fuzzed_images_never_crash(predictor, image) -> None:
    valid = image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 0
    if not valid:
        with pytest.raises(ValueError):
            predictor(image)
        return
    out = predictor(image)
    n = len(out["scores"])
    assert out["masks"].shape == (n, image.shape[0], image.shape[1])
    assert out["boxes"].shape == (n, 4)
    assert (out["boxes"][:, 0::2] <= image.shape[1]).all() and (out["boxes"][:, 1::2] <= image.shape[0]).all()
    assert (out["boxes"] >= 0).all()
