"""`boxseg predict --model`: an exported graph through boxseg.runtime gives the same instances as the Predictor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from boxseg.runtime import Predictor
from boxseg.runtime.testing import make_test_model
from PIL import Image


def test_predict_model_writes_runtime_results_without_torch(tmp_path: Path) -> None:
    model = make_test_model(tmp_path / "m.onnx", max_dets=8, num_valid=5)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    arrays = {f"im{i}.png": rng.integers(0, 255, (96 + 32 * i, 128, 3), dtype=np.uint8) for i in range(3)}
    for name, arr in arrays.items():
        Image.fromarray(arr).save(images / name)
    out = tmp_path / "pred"
    # A subprocess so we can check that the exported-model path never imports torch.
    code = ("import sys; from boxseg.cli import main\n"
            "try:\n    main([" + ", ".join(repr(a) for a in [
                "predict", "--model", str(model), "--images", str(images), "--out", str(out),
                "--score-thr", "0.0", "--batch", "1", "--json"]) + "])\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules, 'predict --model imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    results = json.loads((out / "results.json").read_text())
    predictor = Predictor(model)  # one image per call, as --batch 1 (the test graph's scores see padding)
    expected = {name: predictor(arr) for name, arr in arrays.items()}
    assert summary["images"] == 3
    assert summary["instances"] == len(results) == sum(len(e["scores"]) for e in expected.values())
    for name, exp in expected.items():
        got = sorted((r for r in results if r["file_name"] == name), key=lambda r: -r["score"])
        assert np.allclose([r["score"] for r in got], np.sort(exp["scores"])[::-1], atol=1e-6)
        assert (out / name).is_file()  # the overlay


def test_predict_model_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from boxseg.cli import main

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    r = CliRunner().invoke(main, ["predict", "--model", str(bad), "--images", str(tmp_path / "images"),
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "bad.onnx" in r.output and "Traceback" not in r.output
