"""Backend building blocks: numpy pre against torch pre, backend availability, OpenVINO against ORT, and the\ntorch backend building a checkpoint's student the way every other reader does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from boxseg.bench.backends import (
    OpenVinoBackend,
    OrtBackend,
    RuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    preprocess_numpy,
    preprocess_torch,
)
from boxseg.bench.latency import synthetic_images
from tiny_models import N_VALID


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
    ok, reason = OpenVinoBackend(fake_pt).available()
    assert not ok and "needs an ONNX file" in reason


def test_openvino_backend_matches_ort(tiny_onnx: Path) -> None:
    """Same graph, same numpy pre/post: OpenVINO's detections are ORT's within the export verification's
    tolerance (`boxseg.export.verify.compare_detections`)."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install 'boxseg[openvino]')")
    from boxseg.export.verify import TOLERANCES, compare_detections

    images = synthetic_images(96, 2, seed=5)
    ov_b, ort_b = OpenVinoBackend(tiny_onnx, threads=1), OrtBackend(tiny_onnx, threads=1)
    outs = {}
    for b in (ov_b, ort_b):
        assert b.available() == (True, "")
        b.prepare(96, 2)
        assert b.run(images)["dets"] == 2 * N_VALID
        x, _ = preprocess_numpy(images, 96)
        out = {k: np.array(v) for k, v in b._infer(x).items()}
        for i, n in enumerate(out["num_dets"]):  # the tiny graph leaves its padding rows filled; the contract's
            out["scores"][i, n:], out["classes"][i, n:] = 0.0, -1  # are (score 0, class -1)
        outs[b.name] = out
        b.close()
    cmp = compare_detections(outs["ort"], outs["openvino"], TOLERANCES, 0.5, 0.0)
    assert cmp["passed"], cmp["failures"]
    for (bo, mo), (bv, mv) in zip(ort_b.last_results, ov_b.last_results):
        np.testing.assert_allclose(bv, bo, rtol=1e-5, atol=1e-3)
        assert mv.shape == mo.shape and (mv != mo).sum() <= 2  # threshold ties only


def test_openvino_missing_is_a_skip_reason(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    ok, reason = OpenVinoBackend(tiny_onnx).available()
    assert not ok and "openvino is not installed" in reason


def test_torch_backend_resolves_norm_and_pretrained_like_the_exporter(tmp_path: Path) -> None:
    """The bench once built the checkpoint's model from the stored config as is: a run trained from ImageNet
    weights (``pretrained`` a path that does not exist here, ``backbone_norm: auto`` -> frozen BN) then failed
    to build or got the wrong norm layers. Every reader now uses boxseg.model.checkpoint.model_from_checkpoint."""
    import torch
    from boxseg.export.source import load_student
    from boxseg.train.checkpoint import make_checkpoint, save_checkpoint

    from boxseg.config import config_to_dict
    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    trained = CondInst(ModelConfig.tiny(backbone_norm="frozen_bn"))
    stored = {**config_to_dict(ModelConfig.tiny()), "backbone_norm": "auto", "pretrained": str(tmp_path / "gone.pth")}
    path = save_checkpoint(make_checkpoint(model=trained, iteration=3, config={"model": stored},
                                           class_names=["a", "b", "c"]), tmp_path / "run.pt")
    backend = TorchBackend(path)
    ok, reason = backend.available()
    assert ok, reason
    assert backend.model.cfg.backbone_norm == "frozen_bn" and backend.model.cfg.pretrained is False
    exported = load_student(path).model
    for (k, a), (k2, b) in zip(backend.model.state_dict().items(), exported.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_the_ort_backend_spins_like_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bare ORT session and the runtime's session share the spin-wait setting (off unless BOXSEG_ORT_SPIN=1):
    with ORT's default (on) against the runtime's (off), small inputs read as a 10-15% runtime overhead."""
    from boxseg.bench.backends import ort_spin

    monkeypatch.delenv("BOXSEG_ORT_SPIN", raising=False)
    assert ort_spin() == "0"
    monkeypatch.setenv("BOXSEG_ORT_SPIN", "1")
    assert ort_spin() == "1"
    monkeypatch.setenv("BOXSEG_ORT_SPIN", "0")
    assert ort_spin() == "0"
