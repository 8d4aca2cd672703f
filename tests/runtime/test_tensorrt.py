"""TensorRT backend: an engine built from the contract test model gives the ONNX Runtime results.

Needs TensorRT, a GPU and a runtime built with -DBOXSEG_WITH_TENSORRT=ON; skips cleanly otherwise."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from boxseg.runtime import Predictor
from boxseg.runtime._native import load_core
from runtime_helpers import assert_masks_match, random_image

pytestmark = [pytest.mark.tensorrt, pytest.mark.cuda]


def build_engine(onnx_path, engine_path) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 32, 32), (1, 3, 128, 128), (2, 3, 256, 256))
    config.add_optimization_profile(profile)
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))


def test_tensorrt_engine_matches_onnxruntime(model_path, tmp_path) -> None:
    if not load_core().has_tensorrt:
        pytest.skip("this runtime was built without -DBOXSEG_WITH_TENSORRT=ON")
    engine = tmp_path / "model.engine"
    build_engine(model_path, engine)
    metadata = {p.key: p.value for p in onnx.load(model_path).metadata_props}
    (tmp_path / "model.engine.json").write_text(json.dumps(metadata))
    trt_predictor = Predictor(engine, device="cuda")
    ort_predictor = Predictor(model_path)
    image = random_image(np.random.default_rng(0), 100, 120)
    got, want = trt_predictor(image), ort_predictor(image)
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
    np.testing.assert_array_equal(got["classes"], want["classes"])
    assert_masks_match(got["masks"], want["masks"])
    with pytest.raises(ValueError, match="optimisation profile"):
        trt_predictor(random_image(np.random.default_rng(1), 300, 300))
