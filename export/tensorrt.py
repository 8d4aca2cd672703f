"""TensorRT engines built from the exported ONNX graph through TensorRT's Python API (pip extra `tensorrt`).

`tensorrt` is imported only inside these functions, so this module imports anywhere. What gets built:
- one optimisation profile for the `images` input: min (1, 3, min_h, min_w), opt = max = (batch, 3, H, W) where
  (H, W) = --imgsz is the largest letterbox canvas and --batch the largest batch (dynamic export); a static
  export fixes all three to (batch, 3, H, W);
- fp32 by default, fp16 with --half, int8 with --int8 (IInt8EntropyCalibrator2 over images from a COCO-format
  folder, prepared exactly like the runtime's input: letterbox into the opt canvas, 0..255 floats; fp16 is also
  enabled so layers without an int8 kernel do not fall back to fp32);
- a timing cache file that is read before and written after every build, so rebuilds are fast;
- the engine file (a plain serialized plan) plus `<engine>.json` with the model metadata (see metadata.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from boxseg.export.atomic import atomic_outputs
from boxseg.export.errors import ExportError
from boxseg.export.metadata import sidecar_path, write_sidecar

INPUT_NAME = "images"
MIN_SIDE = 64


@dataclass(frozen=True)
class EngineProfile:
    """Shapes (B, 3, H, W) of the optimisation profile for the `images` input."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]


def engine_profile(batch: int, imgsz: tuple[int, int], dynamic: bool = True, divisor: int = 32) -> EngineProfile:
    """min/opt/max from --batch and --imgsz (the largest canvas); see the module docstring."""
    full = (batch, 3, imgsz[0], imgsz[1])
    if not dynamic:
        return EngineProfile(full, full, full)
    # Half the canvas (but at least MIN_SIDE) covers letterboxed inputs of any aspect ratio up to 2:1.
    low = tuple(max(MIN_SIDE, (s // 2) // divisor * divisor) for s in imgsz)
    return EngineProfile((1, 3, low[0], low[1]), full, full)


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError("TensorRT is not installed: install the extra with `pip install 'boxseg[tensorrt]'` "
                          "on a machine with an NVIDIA GPU and driver.") from exc
    return trt


class _DeviceBuffer:
    """A CUDA buffer through torch (when torch has CUDA) or pycuda: enough for calibration and verification."""

    def __init__(self, nbytes: int) -> None:
        import torch

        if torch.cuda.is_available():
            self._t = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            self.ptr = int(self._t.data_ptr())
            self._cuda = None
        else:
            try:
                import pycuda.autoinit  # noqa: F401  (creates the context)
                import pycuda.driver as cuda
            except ImportError as exc:
                raise ExportError("no CUDA device memory available: torch has no CUDA and pycuda is not "
                                  "installed (pip install 'boxseg[tensorrt]').") from exc
            self._cuda = cuda
            self._mem = cuda.mem_alloc(nbytes)
            self.ptr = int(self._mem)

    def upload(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if self._cuda is None:
            import torch

            self._t[: array.nbytes].copy_(torch.from_numpy(array.view(np.uint8).reshape(-1)))
            torch.cuda.synchronize()
        else:
            self._cuda.memcpy_htod(self._mem, array)


def make_calibrator(trt: Any, image_paths: list[Path], shape: tuple[int, int, int, int], cache_file: Path | None):
    """An IInt8EntropyCalibrator2 that feeds `image_paths` in batches of shape[0] at canvas shape[2:]."""
    from boxseg.export.images import letterbox, read_rgb

    batch, _, height, width = shape
    if len(image_paths) < batch:
        raise ExportError(f"int8 calibration needs at least one full batch: {len(image_paths)} image(s) for "
                          f"batch {batch}.")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the Python base class must be initialised explicitly
            self.batches = len(image_paths) // batch  # partial last batch dropped: TRT wants full batches
            self.index = 0
            self.host = np.zeros(shape, dtype=np.float32)
            self.device = _DeviceBuffer(self.host.nbytes)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= self.batches:
                return None
            for j in range(batch):
                path = image_paths[self.index * batch + j]
                self.host[j] = letterbox(read_rgb(path), (height, width))[0]
            self.device.upload(self.host)
            self.index += 1
            return [self.device.ptr]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file is not None and cache_file.is_file():
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, profile: EngineProfile, metadata: dict[str, str],
                 fp16: bool = False, int8: bool = False, calib_images: list[Path] | None = None,
                 calib_cache: Path | None = None, timing_cache: Path | None = None, workspace_gb: float = 4.0
                 ) -> dict[str, Any]:
    """Parse `onnx_path`, build and write `engine_path` and its metadata sidecar atomically; return build info."""
    trt = _import_tensorrt()
    if int8 and not calib_images:
        raise ExportError("int8 engines need calibration images (--calib-data DIR).")
    engine_path = Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT could not parse {str(onnx_path)!r}:\n  " + "\n  ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    if fp16 or int8:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
        calib_profile = builder.create_optimization_profile()  # calibration runs at one fixed shape: opt
        calib_profile.set_shape(INPUT_NAME, profile.opt, profile.opt, profile.opt)
        config.set_calibration_profile(calib_profile)
        config.int8_calibrator = make_calibrator(trt, list(calib_images or []), profile.opt, calib_cache)

    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine from {str(onnx_path)!r} (see the log above).")

    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    meta = dict(metadata)
    meta.update({
        "boxseg.artifact": "tensorrt-engine",
        "boxseg.engine.precision": precision,
        "boxseg.engine.tensorrt_version": trt.__version__,
        "boxseg.engine.profile": json.dumps({"min": profile.min, "opt": profile.opt, "max": profile.max}),
    })
    with atomic_outputs(engine_path, sidecar_path(engine_path)) as (tmp_engine, tmp_meta):
        tmp_engine.write_bytes(bytes(plan))
        write_sidecar(tmp_meta, meta)
    if timing_cache is not None:
        with contextlib.suppress(OSError), atomic_outputs(timing_cache) as (tmp_cache,):
            tmp_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"build_seconds": seconds, "precision": precision, "tensorrt_version": trt.__version__,
            "engine_bytes": engine_path.stat().st_size}


class EngineRunner:
    """Runs a built engine on numpy input (for --verify): outputs as numpy, by name."""

    def __init__(self, engine_path: str | Path) -> None:
        import torch

        trt = _import_tensorrt()
        if not torch.cuda.is_available():
            raise ExportError("running a TensorRT engine here needs torch with CUDA.")
        self._torch = torch
        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ExportError(f"TensorRT could not deserialize {str(engine_path)!r}.")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch, trt = self._torch, self._trt
        inp = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).cuda()
        self.context.set_input_shape(INPUT_NAME, tuple(inp.shape))
        self.context.set_tensor_address(INPUT_NAME, inp.data_ptr())
        outputs = {}
        for name in self.names:
            if self.engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed.")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}


def export_engine_file(source, out: Path, opts) -> Any:
    """Format-table entry for `tensorrt`: ONNX graph (temporary) -> TensorRT engine + metadata sidecar."""
    import tempfile

    import onnx
    from boxseg.export.images import list_images
    from boxseg.export.metadata import build_metadata
    from boxseg.export.onnx import build_onnx_model, verify_for_export
    from boxseg.export.options import ExportResult

    _import_tensorrt()  # fail before the slow ONNX export when TensorRT is missing
    model = source.model
    cfg = model.cfg
    max_dets = int(cfg.max_dets if opts.max_dets is None else opts.max_dets)
    calib = list_images(opts.calib_data, limit=opts.calib_images) if opts.int8 else None
    meta = build_metadata(class_names=source.class_names, mean=cfg.mean, std=cfg.std, max_dets=max_dets,
                          preset=source.preset, mask_threshold=cfg.mask_thresh,
                          extra={"score_threshold": repr(float(cfg.score_thresh)),
                                 "nms_threshold": repr(float(cfg.nms_thresh)), "opset": str(opts.opset),
                                 "dynamic": str(opts.dynamic).lower(), "iteration": str(source.iteration)})
    proto, info = build_onnx_model(model, opset=opts.opset, dynamic=opts.dynamic, batch=opts.batch,
                                   imgsz=tuple(opts.imgsz), max_dets=max_dets, metadata=meta)
    if info.tensorrt_problems:
        raise ExportError("the exported graph has nodes TensorRT cannot parse:\n  " +
                          "\n  ".join(info.tensorrt_problems))
    meta["boxseg.min_size"] = str(info.min_side)
    profile = engine_profile(opts.batch, tuple(opts.imgsz), opts.dynamic)
    if opts.dynamic and info.min_side > profile.min[2]:
        profile = EngineProfile((1, 3, info.min_side, info.min_side), profile.opt, profile.max)
    timing_cache = Path(opts.timing_cache) if opts.timing_cache else out.parent / "boxseg-trt-timing.cache"
    with tempfile.TemporaryDirectory(prefix="boxseg-trt-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx.save_model(proto, str(onnx_path))
        build = build_engine(onnx_path, out, profile=profile, metadata=meta, fp16=opts.half, int8=opts.int8,
                             calib_images=calib, timing_cache=timing_cache, workspace_gb=opts.workspace_gb)
        verification = None
        if opts.verify:
            try:
                verification = verify_for_export(model, onnx_path, opts, info, runner=EngineRunner(out),
                                                 max_batch=profile.max[0])
            except BaseException:
                _remove(out)
                raise
            if not verification["passed"] and build["precision"] == "fp32":
                _remove(out)
                raise ExportError(f"--verify failed for the TensorRT engine; nothing was kept: {verification}")
    return ExportResult(format="tensorrt", path=out, files=[out, sidecar_path(out), timing_cache],
                        seconds=info.seconds + build["build_seconds"], size_bytes=out.stat().st_size,
                        metadata=meta, details={**build, "profile": vars(profile), "onnx_nodes": info.num_nodes},
                        verification=verification)


def _remove(engine: Path) -> None:
    for path in (engine, sidecar_path(engine)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
