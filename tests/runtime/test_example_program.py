"""The C++ example program (no Python inside) runs an exported model on an image file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from boxseg.runtime import Predictor, example_program, find_onnxruntime_library
from PIL import Image
from runtime_helpers import random_image


@pytest.fixture(scope="module")
def program() -> Path:
    exe = example_program()
    assert exe is not None, "boxseg_predict_image was not built/installed with the package"
    return exe


def test_example_program_matches_the_python_predictor(program, model_path, tmp_path) -> None:
    image = random_image(np.random.default_rng(0), 90, 120)
    Image.fromarray(image).save(tmp_path / "image.png")
    # The program reads binary PPM; convert the PNG as a user would.
    Image.open(tmp_path / "image.png").convert("RGB").save(tmp_path / "image.ppm")
    env = {**os.environ, "BOXSEG_ORT_LIBRARY": str(find_onnxruntime_library())}
    proc = subprocess.run(
        [str(program), str(model_path), str(tmp_path / "image.ppm"), "--threads", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["image"] == {"path": str(tmp_path / "image.ppm"), "height": 90, "width": 120}
    want = Predictor(model_path, threads=1)(image, rle=True)
    dets = report["detections"]
    assert len(dets) == len(want["scores"]) > 0
    for k, det in enumerate(dets):
        np.testing.assert_allclose(det["box"], want["boxes"][k], atol=1e-4)
        assert det["score"] == pytest.approx(float(want["scores"][k]), abs=1e-6)
        assert det["class"] == want["classes"][k]
        assert det["class_name"] == ["circle", "square", "triangle"][det["class"]]
        assert det["segmentation"] == want["masks"][k]
    assert set(report["timings_ms"]) == {"pre", "infer", "post", "total"}


def test_example_program_reports_errors_cleanly(program, model_path, tmp_path) -> None:
    lib = str(find_onnxruntime_library())
    (tmp_path / "bad.ppm").write_bytes(b"P3\n2 2\n255\n0 0 0")
    cases = [
        ([str(model_path), str(tmp_path / "bad.ppm"), "--ort-library", lib], "not a binary PPM"),
        ([str(model_path), str(tmp_path / "missing.ppm"), "--ort-library", lib], "cannot open image"),
        ([str(model_path), str(tmp_path / "bad.ppm")], "no ONNX Runtime library"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "BOXSEG_ORT_LIBRARY"}
    for args, message in cases:
        proc = subprocess.run(
            [str(program), *args], check=False, capture_output=True, text=True, timeout=60, env=env
        )
        assert proc.returncode != 0
        assert message in proc.stderr
