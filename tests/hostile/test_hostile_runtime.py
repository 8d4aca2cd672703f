"""Hostile arguments to the deployed runtime, the thread pool's failure path, and batching that must not change
results (runtime and PyTorch predictor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from boxseg.runtime import Predictor
from boxseg.runtime._native import bundled_program, load_core
from boxseg.runtime.testing import make_test_model
from hostile_helpers import run_limited

DEFAULT_THRESHOLD = 0.3  # boxseg predict's default --score-thr


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("hostile_models") / "m.onnx", max_dets=8, num_valid=5)


def _image(seed: int, h: int, w: int, level: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def assert_same_detections(batched: dict, single: dict) -> None:
    assert len(batched["scores"]) == len(single["scores"])  # the same detection set at the threshold
    np.testing.assert_array_equal(batched["classes"], single["classes"])
    np.testing.assert_allclose(batched["boxes"], single["boxes"], atol=1e-3, rtol=0)
    np.testing.assert_allclose(batched["scores"], single["scores"], atol=1e-4, rtol=0)


def test_runtime_batch_equals_single_images(model_path: Path) -> None:
    # A bright small image beside a dark large one: padded together, the small one's padding would darken what
    # the graph sees and change its detections (the test graph reads the mean of its whole input).
    small, large, small2 = _image(0, 60, 80, 200), _image(1, 300, 400, 30), _image(2, 60, 80, 190)
    predictor = Predictor(model_path, threads=2, score_threshold=DEFAULT_THRESHOLD)
    singles = [predictor(im) for im in (small, large, small2)]
    batched = predictor.predict_batch([small, large, small2])
    for b, s in zip(batched, singles):
        assert_same_detections(b, s)
        np.testing.assert_array_equal(b["masks"], s["masks"])
    assert predictor.last_timings["runs"] == [(2, 64, 96), (1, 320, 416)]  # equal sizes still share a run
    # The hazard is real: the same graph run on the jointly padded batch gives the small image other results.
    from boxseg.runtime import reference as ref
    from boxseg.runtime.testing import run_reference_graph

    batch, resized = ref.preprocess([small, large], 0, 0, 32)
    joint = ref.postprocess(run_reference_graph(model_path, batch), [small.shape[:2], large.shape[:2]], resized,
                            4, 0.5, DEFAULT_THRESHOLD)[0]
    assert len(joint["scores"]) != len(singles[0]["scores"]) or not np.allclose(joint["boxes"],
                                                                                singles[0]["boxes"], atol=1e-3)


def test_pytorch_predictor_batch_equals_single_images() -> None:
    import torch
    from boxseg.train.config import InputConfig
    from boxseg.train.data import eval_transform

    from boxseg.eval.predict import _predict_views, predict_images
    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    torch.manual_seed(0)
    # prior_prob 0.5 puts a random-init model's scores around the threshold, so there is something to compare.
    model = CondInst(ModelConfig.tiny(num_classes=3, prior_prob=0.5)).eval()
    cfg = InputConfig(test_size=64, test_max_size=128)
    images = [_image(3, 64, 96, 180), _image(4, 100, 75, 60), _image(5, 64, 96, 120)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        singles = [predict_images(model, [im], cfg, score_thr=DEFAULT_THRESHOLD)[0] for im in images]
        batched = predict_images(model, images, cfg, score_thr=DEFAULT_THRESHOLD)
        # What one jointly padded batch (the old behaviour) gives: GroupNorm statistics include the padding.
        joint = _predict_views(model, images, [eval_transform(im, cfg) for im in images], cfg, "cpu",
                               DEFAULT_THRESHOLD)
    finally:
        torch.set_num_threads(before)
    assert sum(len(s["scores"]) for s in singles) > 0
    for b, s in zip(batched, singles):
        assert_same_detections(b, s)
    assert any(len(j["scores"]) != len(s["scores"]) or not np.allclose(j["scores"], s["scores"], atol=1e-3)
               for j, s in zip(joint, singles))


def test_thread_creation_failure_rethrows_without_hanging() -> None:
    exe = bundled_program("boxseg_thread_pool_failure")
    assert exe is not None, "boxseg_thread_pool_failure was not built/installed with the package"
    try:
        proc = subprocess.run([str(exe), "12"], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("hang: the thread pool did not recover from a failed thread creation") from exc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("constructor rethrew") == 11 and "all passed" in proc.stdout


def test_a_thousand_threads_under_a_memory_limit_fail_cleanly_or_work(model_path: Path) -> None:
    # The probe: Predictor(threads=1000) in a memory-limited container hung. Thread stacks (megabytes of
    # address space each) exceed the limit, so starting them fails; that must be a clear error (or, on a machine
    # with small default stacks, a working predictor), never a hang or a crash.
    code = ("from boxseg.runtime import Predictor\n"
            "try:\n"
            f"    Predictor({str(model_path)!r}, threads=1024)\n"
            "    print('constructed')\n"
            "except RuntimeError as e:\n"
            "    print('error:', e)\n")
    proc = run_limited([sys.executable, "-c", code], timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.strip()
    assert out == "constructed" or (
        "cannot start the pre/post-processing threads (threads=1024)" in out and "pass a smaller threads=" in out
    ), out


@pytest.mark.parametrize("view", ["flipped_width_1", "flipped_height_1", "flipped_both"])
def test_negative_stride_arrays_work(model_path: Path, view: str) -> None:
    base = _image(6, 40, 50, 150)
    arr = {"flipped_width_1": base[:, :1][:, ::-1], "flipped_height_1": base[:1][::-1],
           "flipped_both": base[::-1, ::-1]}[view]
    predictor = Predictor(model_path, threads=1)
    got, want = predictor(arr), predictor(arr.copy())
    np.testing.assert_array_equal(got["boxes"], want["boxes"])
    np.testing.assert_array_equal(got["masks"], want["masks"])


def test_negative_strides_at_the_core_name_the_strides_and_a_fix_that_works(model_path: Path) -> None:
    core = load_core()
    flipped = _image(7, 20, 30, 100)[::-1]
    with pytest.raises(ValueError) as exc:
        core.preprocess([flipped])
    msg = str(exc.value)
    assert "strides (-90, 3, 1)" in msg and "image.copy()" in msg
    core.preprocess([flipped.copy()])  # the advice works


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"threads": 2**31}, "threads must be an integer in 0..1024 (0 = one per hardware thread), got 2147483648"),
    ({"threads": -1}, "threads must be an integer in 0..1024"),
    ({"min_size": 10**9}, "min_size must be an integer in 0..16384 (0 = off), got 1000000000; e.g. min_size=800"),
    ({"max_size": 2**62}, "max_size must be an integer in 0..16384"),
    ({"score_threshold": float("nan")}, "score_threshold must be a number in [0, 1], got nan"),
    ({"mask_threshold": float("nan")}, "mask_threshold must be a number in [0, 1], got nan"),
])
def test_bad_predictor_arguments_name_value_range_and_example(model_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError) as exc:
        Predictor(model_path, **kwargs)
    assert words in str(exc.value)


def test_core_limits_hold_without_the_python_wrapper(model_path: Path) -> None:
    core = load_core()
    for args, words in [((1025, 0, 0, 0.0), "threads is 1025; expected 0"),
                        ((1, 10**9, 0, 0.0), "min_size is 1000000000; expected 0 (off) or 1..16384"),
                        ((1, 0, 0, float("nan")), "score_threshold is nan")]:
        threads, min_size, max_size, score = args
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            core.CorePredictor(str(model_path), "cpu", threads, min_size, max_size, score, -1.0)


def test_an_image_that_would_resize_past_the_limit_is_a_clear_error(model_path: Path) -> None:
    predictor = Predictor(model_path, threads=1, min_size=16384)
    with pytest.raises(ValueError) as exc:
        predictor(np.zeros((8, 1000, 3), np.uint8))
    msg = str(exc.value)
    assert "image 0 (8 x 1000) would be resized to 16384 x 2048000" in msg and "set max_size" in msg


def test_a_folder_given_as_the_model_says_so_and_names_the_file_inside(tmp_path: Path, model_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a folder; expected an exported model file.*boxseg export"):
        Predictor(folder)
    (folder / "model.onnx").write_bytes(model_path.read_bytes())
    with pytest.raises(IsADirectoryError) as exc:
        Predictor(folder)
    assert str(folder / "model.onnx") in str(exc.value) and "pass one of those" in str(exc.value)
    assert Predictor(folder / "model.onnx", threads=1).class_names == ["circle", "square", "triangle"]
