"""boxseg.runtime.Predictor end to end against the reference pipeline: numpy pre-processing, the same graph run
by onnxruntime's Python API, numpy post-processing."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from boxseg.runtime import Predictor
from boxseg.runtime import reference as ref
from boxseg.runtime.testing import run_reference_graph
from runtime_helpers import assert_masks_match, random_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def reference_predict(model_path, images, min_size=0, max_size=0, score_threshold=0.0, mask_threshold=0.5):
    batch, resized = ref.preprocess(images, min_size, max_size, 32)
    outputs = run_reference_graph(model_path, batch)
    sizes = [im.shape[:2] for im in images]
    return ref.postprocess(outputs, sizes, resized, 4, mask_threshold, score_threshold)


def reference_each(model_path, images, min_size=0, max_size=0):
    """The reference run on each image alone: what a batch must give (the runtime batches only equal padded
    sizes, so an image's detections never depend on its neighbours)."""
    return [reference_predict(model_path, [im], min_size, max_size)[0] for im in images]


def assert_detections_match(got: dict, want: dict) -> None:
    assert got["boxes"].dtype == np.float32 and got["boxes"].shape == want["boxes"].shape
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-6, rtol=0)
    assert got["classes"].dtype == np.int64
    np.testing.assert_array_equal(got["classes"], want["classes"])
    assert_masks_match(got["masks"], want["masks"])


def test_single_image_matches_reference_pipeline(predictor, model_path) -> None:
    image = random_image(np.random.default_rng(0), 120, 170)
    got = predictor(image)
    want = reference_predict(model_path, [image])[0]
    assert len(got["scores"]) >= 5
    assert got["masks"].shape == (len(got["scores"]), 120, 170)
    assert_detections_match(got, want)
    assert got["masks"].any(axis=(1, 2)).all()
    # Nothing outside a box: every mask pixel lies within its (clipped) box.
    for box, m in zip(got["boxes"], got["masks"]):
        ys, xs = np.nonzero(m)
        assert xs.min() >= np.floor(box[0]) and xs.max() < np.ceil(box[2])
        assert ys.min() >= np.floor(box[1]) and ys.max() < np.ceil(box[3])


def test_batch_of_different_sizes_with_resize_matches_reference(model_path) -> None:
    rng = np.random.default_rng(1)
    images = [random_image(rng, 90, 140), random_image(rng, 150, 100), random_image(rng, 64, 64)]
    images[2][:] = 5  # a dark image: the detection that needs a bright input stays invalid
    predictor = Predictor(model_path, threads=2, min_size=96, max_size=160)
    got = predictor.predict_batch(images)
    want = reference_each(model_path, images, 96, 160)
    assert len(got) == 3
    for g, w in zip(got, want):
        assert_detections_match(g, w)
    assert len(got[2]["scores"]) == 5 and len(got[0]["scores"]) == 6
    t = predictor.last_timings
    assert t["batch"] == 3 and t["input_hw"] == (160, 160)
    assert t["runs"] == [(1, 96, 160), (1, 160, 96), (1, 96, 96)]  # three padded sizes: three graph runs
    for key in ("pre_ms", "infer_ms", "post_ms", "total_ms", "end_to_end_ms"):
        assert t[key] > 0
    assert t["total_ms"] >= t["pre_ms"] + t["infer_ms"] + t["post_ms"] - 1e-6


def test_batch_array_input_equals_single_calls(predictor) -> None:
    rng = np.random.default_rng(2)
    stack = np.stack([random_image(rng, 64, 96) for _ in range(2)])
    batched = predictor.predict_batch(stack)
    for b in range(2):
        single = predictor(stack[b])
        np.testing.assert_array_equal(batched[b]["boxes"], single["boxes"])
        np.testing.assert_array_equal(batched[b]["masks"], single["masks"])


def test_rle_output_is_the_pycocotools_encoding_of_the_masks(predictor) -> None:
    image = random_image(np.random.default_rng(3), 100, 130)
    dense = predictor(image)
    rles = predictor(image, rle=True)
    np.testing.assert_array_equal(rles["boxes"], dense["boxes"])
    assert len(rles["masks"]) == len(dense["masks"])
    for rle, m in zip(rles["masks"], dense["masks"]):
        assert rle["size"] == [100, 130]
        assert rle["counts"].encode() == mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]


@pytest.mark.parametrize("variant", [{"input_type": "uint8"}, {"normalized_input": True}])
def test_uint8_and_normalised_graph_inputs_give_the_same_detections(make_model, predictor, variant) -> None:
    name = "uint8" if "input_type" in variant else "normalized"
    other = Predictor(make_model(name, **variant), threads=1)
    image = random_image(np.random.default_rng(4), 96, 128)  # no resize: uint8 input is exact
    got, want = other(image), predictor(image)
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
    np.testing.assert_array_equal(got["classes"], want["classes"])
    assert_masks_match(got["masks"], want["masks"])


def test_thresholds_and_metadata(model_path) -> None:
    image = random_image(np.random.default_rng(5), 80, 80)
    base = Predictor(model_path, threads=1)
    assert base.class_names == ["circle", "square", "triangle"]
    assert base.metadata["boxseg.format"] == "boxseg-onnx"
    assert base.size_divisor == 32 and base.mask_stride == 4 and base.mask_threshold == 0.5
    assert "CPUExecutionProvider" in base.backend
    everything = base(image)
    strict = Predictor(model_path, threads=1, score_threshold=0.5)(image)
    assert 0 < len(strict["scores"]) < len(everything["scores"])
    assert (strict["scores"] >= 0.5).all()
    loose = Predictor(model_path, threads=1, mask_threshold=0.2)(image)
    assert (loose["masks"].sum(axis=(1, 2)) >= everything["masks"].sum(axis=(1, 2))).all()
    assert loose["masks"].sum() > everything["masks"].sum()


def test_no_detections_gives_empty_arrays_of_the_right_shape(make_model) -> None:
    predictor = Predictor(make_model("no_dets", max_dets=4, num_valid=0), threads=1)
    out = predictor(np.zeros((50, 70, 3), np.uint8))  # dark: the borderline detection stays invalid
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["classes"].shape == (0,)
    assert out["masks"].shape == (0, 50, 70) and out["masks"].dtype == np.bool_
    assert predictor(np.zeros((50, 70, 3), np.uint8), rle=True)["masks"] == []


def test_model_resize_uses_the_models_rule(tmp_path, model_path) -> None:
    from boxseg.runtime.testing import default_metadata, make_test_model

    meta = {**default_metadata(8, ["a", "b", "c"], "RGB uint8 0..255 as float32"),
            "boxseg.test_size": "96", "boxseg.test_max_size": "160"}
    path = make_test_model(tmp_path / "m.onnx", class_names=["a", "b", "c"], metadata=meta)
    images = [random_image(np.random.default_rng(2), 90, 140), random_image(np.random.default_rng(3), 150, 100)]
    by_model = Predictor(path, threads=1, model_resize=True)
    assert (by_model.min_size, by_model.max_size) == (96, 160)
    got = by_model.predict_batch(images)
    for g, w in zip(got, reference_each(path, images, 96, 160)):
        assert_detections_match(g, w)
    assert by_model.last_timings["input_hw"] == (160, 160)
    # A model without the keys keeps the original size; explicit sizes and model_resize exclude each other.
    plain = Predictor(model_path, threads=1, model_resize=True)
    assert (plain.min_size, plain.max_size) == (0, 0)
    with pytest.raises(ValueError, match="either model_resize"):
        Predictor(path, model_resize=True, min_size=96)
