"""TensorRT engine building. The real builds need TensorRT and a GPU (marked, skipped here with the reason); the
builder logic (profiles, precision flags, calibration batches, timing cache, atomic engine + sidecar) is also
checked against a recording stand-in for the `tensorrt` module, so it is exercised on every machine."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from boxseg.export import tensorrt as trt_export
from boxseg.export.errors import ExportError
from boxseg.export.metadata import build_metadata, read_sidecar, sidecar_path
from export_helpers import VERIFY_SIZES
from PIL import Image


def test_profile_from_batch_and_canvas() -> None:
    dyn = trt_export.engine_profile(4, (640, 800))
    assert dyn.min == (1, 3, 320, 384) and dyn.opt == dyn.max == (4, 3, 640, 800)
    assert trt_export.engine_profile(2, (96, 64)).min == (1, 3, 64, 64)  # never below 64 px
    static = trt_export.engine_profile(2, (640, 640), dynamic=False)
    assert static.min == static.opt == static.max == (2, 3, 640, 640)


class _Recorder:
    """Accepts any call and attribute; remembers the calls that matter."""

    def __init__(self, log: list, name: str) -> None:
        self._log, self._name = log, name

    def __getattr__(self, attr: str):
        def call(*args, **kwargs):
            self._log.append((f"{self._name}.{attr}", args))
            return _Recorder(self._log, attr)
        return call


def _fake_tensorrt(log: list, plan: bytes | None = b"serialized-plan", parse_ok: bool = True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.15.0-fake"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing-cache-v2"

    class Config(_Recorder):
        int8_calibrator = None

        def create_timing_cache(self, data: bytes):
            log.append(("config.create_timing_cache", (data,)))
            return TimingCache()

        def get_timing_cache(self):
            return TimingCache()

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            log.append(("parser.parse_from_file", (path,)))
            return parse_ok

        def get_error(self, i: int) -> str:
            return "In node 3 (importNonMaxSuppression): UNSUPPORTED_NODE"

    class Builder(_Recorder):
        def __init__(self, logger) -> None:
            super().__init__(log, "builder")

        def create_builder_config(self):
            return Config(log, "config")

        def create_optimization_profile(self):
            return _Recorder(log, "profile")

        def build_serialized_network(self, network, config):
            log.append(("builder.build", (config.int8_calibrator,)))
            return plan

    class Calibrator:
        def __init__(self) -> None:
            log.append(("calibrator.init", ()))

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.IInt8EntropyCalibrator2 = Calibrator
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8")
    return trt


class _HostBuffer:
    """Stands in for CUDA memory: keeps what was uploaded."""

    uploads: ClassVar[list[np.ndarray]] = []

    def __init__(self, nbytes: int) -> None:
        self.ptr = 1234

    def upload(self, array: np.ndarray) -> None:
        _HostBuffer.uploads.append(array.copy())


def _calib_folder(root: Path, n: int) -> list[Path]:
    (root / "images").mkdir(parents=True)
    paths = []
    for i in range(n):
        paths.append(root / "images" / f"{i}.png")
        Image.fromarray(np.full((40, 80, 3), 10 * (i + 1), np.uint8)).save(paths[-1])
    return paths


def test_calibrator_feeds_full_letterboxed_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_export, "_DeviceBuffer", _HostBuffer)
    _HostBuffer.uploads = []
    paths = _calib_folder(tmp_path, 5)
    cache = tmp_path / "calib.cache"
    calib = trt_export.make_calibrator(_fake_tensorrt([]), paths, (2, 3, 64, 96), cache)
    assert calib.get_batch_size() == 2
    assert calib.read_calibration_cache() is None
    assert calib.get_batch(["images"]) == [1234] and calib.get_batch(["images"]) == [1234]
    assert calib.get_batch(["images"]) is None  # 5 images -> 2 full batches; the partial one is dropped
    first = _HostBuffer.uploads[0]
    assert first.shape == (2, 3, 64, 96) and first.dtype == np.float32
    assert np.all(first[0, :, :48, :] == 10) and np.all(first[0, :, 48:, :] == 0)  # 40x80 -> 48x96, padded
    assert np.all(first[1, :, :48, :] == 20)
    calib.write_calibration_cache(b"scales")
    assert calib.read_calibration_cache() == b"scales"
    with pytest.raises(ExportError, match="at least one full batch"):
        trt_export.make_calibrator(_fake_tensorrt([]), paths[:1], (2, 3, 64, 96), None)


def _meta() -> dict[str, str]:
    return build_metadata(class_names=["a"], mean=(0, 0, 0), std=(1, 1, 1), max_dets=20, preset="boxinst")


def test_builder_configuration_and_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(log))
    monkeypatch.setattr(trt_export, "_DeviceBuffer", _HostBuffer)
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"graph")
    engine, cache = tmp_path / "m.engine", tmp_path / "timing.cache"
    cache.write_bytes(b"old-cache")
    profile = trt_export.engine_profile(4, (640, 640))
    info = trt_export.build_engine(onnx_path, engine, profile=profile, metadata=_meta(), int8=True,
                                   calib_images=_calib_folder(tmp_path / "calib", 4), timing_cache=cache,
                                   workspace_gb=1.0)
    calls = [name for name, _ in log]
    assert ("parser.parse_from_file", (str(onnx_path),)) in log
    assert ("config.set_memory_pool_limit", ("workspace", 1 << 30)) in log
    assert ("profile.set_shape", ("images", (1, 3, 320, 320), (4, 3, 640, 640), (4, 3, 640, 640))) in log
    assert ("profile.set_shape", ("images", profile.opt, profile.opt, profile.opt)) in log  # calibration profile
    assert ("config.set_flag", ("fp16",)) in log and ("config.set_flag", ("int8",)) in log
    assert ("config.create_timing_cache", (b"old-cache",)) in log and "config.set_timing_cache" in calls
    assert calls.index("calibrator.init") < calls.index("builder.build")
    assert engine.read_bytes() == b"serialized-plan" and cache.read_bytes() == b"timing-cache-v2"
    side = read_sidecar(engine)
    assert side["boxseg.engine.precision"] == "int8" and side["boxseg.class_names"] == '["a"]'
    assert json.loads(side["boxseg.engine.profile"])["opt"] == [4, 3, 640, 640]
    assert info["precision"] == "int8" and info["engine_bytes"] == len(b"serialized-plan")


@pytest.mark.parametrize(("plan", "parse_ok", "message"), [(None, True, "failed to build an engine"),
                                                           (b"x", False, "could not parse")])
def test_builder_failures_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan, parse_ok,
                                        message: str) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt([], plan=plan, parse_ok=parse_ok))
    (tmp_path / "m.onnx").write_bytes(b"graph")
    with pytest.raises(ExportError, match=message):
        trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", metadata=_meta(),
                                profile=trt_export.engine_profile(1, (128, 128)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_int8_without_images_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt([]))
    with pytest.raises(ExportError, match="int8 engines need calibration images"):
        trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", metadata=_meta(), int8=True,
                                profile=trt_export.engine_profile(1, (128, 128)))


# ------------------------------------------------------------------ real TensorRT (GPU machines with the extra)


@pytest.mark.tensorrt
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_matches_pytorch(tmp_path: Path, exported: dict, student, precision: str) -> None:
    from boxseg.export import export
    from boxseg.export.verify import sample_images, verify_onnx

    result = export(exported["checkpoint"], "tensorrt", tmp_path / "m.engine", imgsz=(160, 224), batch=4,
                    half=precision == "fp16")
    assert result.path.stat().st_size > 0 and sidecar_path(result.path).is_file()
    assert read_sidecar(result.path)["boxseg.engine.precision"] == precision
    assert (tmp_path / "boxseg-trt-timing.cache").stat().st_size > 0
    report = verify_onnx(student, exported["onnx"], images=sample_images(4), sizes=VERIFY_SIZES,
                         runner=trt_export.EngineRunner(result.path))
    if precision == "fp32":
        assert report["passed"], report
    else:  # fp16 is not held to fp32 tolerances; the detections must still agree closely
        assert report["min_mask_iou"] > 0.9 and report["box_abs_err"] < 1.0


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_real_int8_engine_with_calibration(tmp_path: Path, exported: dict) -> None:
    from boxseg.export import export

    from boxseg.data.synth import generate_dataset

    generate_dataset(tmp_path / "calib", num_images=8, size=(160, 224), seed=3, progress=False)
    result = export(exported["checkpoint"], "tensorrt", tmp_path / "m.engine", imgsz=(160, 224), batch=2,
                    int8=True, calib_data=tmp_path / "calib")
    assert read_sidecar(result.path)["boxseg.engine.precision"] == "int8"
    out = trt_export.EngineRunner(result.path)(np.zeros((1, 3, 160, 224), np.float32))
    assert out["boxes"].shape == (1, 20, 4) and out["num_dets"].dtype == np.int64
