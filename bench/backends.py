"""One small class per inference backend measured by `boxseg bench latency`.

Every backend takes the same input, a list of uint8 HWC RGB images, and does the whole job: pre-process (resize
so the long side is ``imgsz``, pad to a multiple of the size divisor, NCHW), inference (the exported graph's
contract: fixed-size padded detections, low-resolution mask probabilities), post-process (masks pasted at the
original resolution, only inside their boxes, thresholded to bool). Sizes, padding and pasting follow the
image <-> graph contract, :mod:`boxseg.contract`. ``run`` returns the stage times in milliseconds and the number
of detections, so the harness can put the pipeline's stages side by side:

- ``TorchBackend``: eager PyTorch from a checkpoint (``CondInst.inference``), pre/post in torch (the model's own
  ``boxseg.model.postprocess.paste_masks``).
- ``OrtBackend``: the bare ``onnxruntime.InferenceSession`` on the ONNX file, pre/post in numpy. Its ``infer``
  time is the yardstick the runtime's C++ pre/post is measured against.
- ``OpenVinoBackend``: OpenVINO reading the same ONNX file, compiled for CPU with a latency hint; the same numpy
  pre/post as ``OrtBackend``.
- ``RuntimeBackend``: ``boxseg.runtime.Predictor`` (stage times from ``predictor.last_timings``). It runs at the
  image's own size, padded (its default: no resize), which equals the others' input because the bench's images
  already have their long side at ``imgsz``.
- ``TensorRTBackend``: a TensorRT engine built from the ONNX file or loaded from ``.engine``/``.plan``, both
  through ``boxseg.export.tensorrt``; needs ``tensorrt`` and a CUDA GPU; the same numpy pre/post.

``available()`` never raises: a missing optional dependency (OpenVINO, TensorRT, a GPU), an unbuilt runtime or
a model file of the wrong kind is a reason string.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boxseg.contract import (
    MASK_STRIDE,
    MASK_THRESHOLD,
    OUTPUT_NAMES,
    SIZE_DIVISOR,
    pad_to,
    padded_size,
    paste_masks,
    plan_resize,
    rescale_boxes,
)

Stages = dict[str, float | None]


def _ms(t0: int, t1: int) -> float:
    return (t1 - t0) / 1e6


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200]


# ---------------------------------------------------------------- pre-processing


def preprocess_numpy(
    images: Sequence[np.ndarray], imgsz: int, divisor: int = SIZE_DIVISOR, dtype: Any = np.float32
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Resize so the long side is ``imgsz`` (Pillow bilinear, only when the size changes), pad to ``divisor``,
    stack as NCHW. Returns the batch and each image's resized (h, w) before padding."""
    from PIL import Image

    resized: list[np.ndarray] = []
    for img in images:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected uint8 (H, W, 3) images, got {img.dtype} {img.shape}")
        nh, nw = plan_resize(img.shape[0], img.shape[1], max_size=imgsz)
        if (nh, nw) != img.shape[:2]:
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        resized.append(img)
    sizes = [(r.shape[0], r.shape[1]) for r in resized]
    hp, wp = padded_size(sizes, divisor)
    batch = np.zeros((len(resized), 3, hp, wp), dtype=dtype)
    for i, r in enumerate(resized):
        batch[i, :, : r.shape[0], : r.shape[1]] = r.transpose(2, 0, 1)
    return batch, sizes


def preprocess_torch(images: Sequence[np.ndarray], imgsz: int, device: Any, divisor: int = SIZE_DIVISOR
                     ) -> tuple[Any, list[tuple[int, int]]]:
    """Torch version of :func:`preprocess_numpy`: uint8 HWC list -> float32 NCHW on ``device``, padded."""
    import torch
    import torch.nn.functional as F

    h, w = images[0].shape[:2]
    if any(img.shape != images[0].shape for img in images):
        raise ValueError("preprocess_torch: images in one batch must share a size")
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()
    nh, nw = plan_resize(h, w, max_size=imgsz)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    x = F.pad(x, (0, pad_to(nw, divisor) - nw, 0, pad_to(nh, divisor) - nh))
    return x.contiguous(), [(nh, nw)] * len(images)


def postprocess_numpy(outs: Mapping[str, np.ndarray], images: Sequence[np.ndarray], sizes: list[tuple[int, int]],
                      stride: int, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Graph outputs -> per image (boxes (n, 4) original pixels, masks bool (n, H, W)): the contract's paste."""
    results = []
    for b, img in enumerate(images):
        n = int(outs["num_dets"][b])
        results.append(paste_masks(outs["masks"][b, :n], outs["boxes"][b, :n], img.shape[:2], sizes[b], stride,
                                   threshold))
    return results


def _contract_values(meta: Mapping[str, str]) -> tuple[int, int, float]:
    """(size divisor, mask stride, mask threshold) from a model's metadata, the contract's defaults if absent."""
    return (int(meta.get("boxseg.size_divisor", SIZE_DIVISOR)), int(meta.get("boxseg.mask_stride", MASK_STRIDE)),
            float(meta.get("boxseg.mask_threshold", MASK_THRESHOLD)))


# ---------------------------------------------------------------- interface


class Backend:
    """Interface: ``available() -> (ok, reason)``, ``prepare(imgsz, batch)``, ``run(images) -> stage ms``."""

    name = "backend"

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        self.device = device
        self.threads = threads
        self.imgsz = 0
        self.batch = 0
        # (boxes (n, 4) in original pixels, masks bool (n, H, W)) per image of the last run, for checks.
        self.last_results: list[tuple[Any, Any]] = []

    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def prepare(self, imgsz: int, batch: int) -> None:
        self.imgsz, self.batch = imgsz, batch

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        """Process one batch; returns {"pre", "infer", "post"} in ms (None if unknown) and "dets" (count)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued device work (CUDA backends); no-op on CPU."""

    def close(self) -> None:
        """Release sessions/engines."""


# ---------------------------------------------------------------- torch


class TorchBackend(Backend):
    """Eager PyTorch: ``model.inference`` on a checkpoint's student (or a given ``nn.Module``)."""

    name = "torch"

    def __init__(self, model_path: str | Path | None = None, *, model: Any = None, device: str = "cpu",
                 threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.model_path = Path(model_path) if model_path is not None else None
        self.model = model
        self._threads_before: int | None = None

    def available(self) -> tuple[bool, str]:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            return False, "no CUDA GPU visible to torch"
        if self.model is None:
            if self.model_path is None:
                return False, "no model given"
            if self.model_path.suffix.lower() != ".pt":
                return False, f"needs a checkpoint (.pt), got {self.model_path.name}"
            from boxseg.model.checkpoint import model_from_checkpoint

            try:
                self.model, _ = model_from_checkpoint(self.model_path)
            except Exception as exc:  # noqa: BLE001 - a bad file or checkpoint mismatch: a skip reason
                return False, f"cannot build the model from {self.model_path.name}: {_short(exc)}"
        self.model = self.model.to(self.device).eval()
        return True, ""

    def prepare(self, imgsz: int, batch: int) -> None:
        super().prepare(imgsz, batch)
        if self.threads and self.device == "cpu":
            import torch

            if self._threads_before is None:
                self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        import torch

        from boxseg.model.postprocess import paste_masks as paste_masks_torch

        threshold = float(getattr(getattr(self.model, "cfg", None), "mask_thresh", MASK_THRESHOLD))
        with torch.inference_mode():
            t0 = time.perf_counter_ns()
            x, sizes = preprocess_torch(images, self.imgsz, self.device)
            self.sync()
            t1 = time.perf_counter_ns()
            dets = self.model.inference(x)
            self.sync()
            t2 = time.perf_counter_ns()
            num = _field(dets, "num_dets").tolist()
            boxes, masks = _field(dets, "boxes"), _field(dets, "masks")
            results = []
            for b, img in enumerate(images):
                n, (h, w) = int(num[b]), img.shape[:2]
                pasted = paste_masks_torch(masks[b, :n], boxes[b, :n], (h, w), sizes[b], MASK_STRIDE, threshold)
                out_boxes = rescale_boxes(boxes[b, :n].float().cpu().numpy(), sizes[b][0] / h, sizes[b][1] / w, h, w)
                results.append((out_boxes, pasted.cpu().numpy()))
            t3 = time.perf_counter_ns()
        self.last_results = results
        return {"pre": _ms(t0, t1), "infer": _ms(t1, t2), "post": _ms(t2, t3), "dets": float(sum(num))}

    def close(self) -> None:
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None


def _field(dets: Any, name: str) -> Any:
    # CondInst.inference returns a dataclass; the graph contract's test modules return a dict.
    return dets[name] if isinstance(dets, Mapping) else getattr(dets, name)


# ---------------------------------------------------------------- ONNX graphs with numpy pre/post


class _GraphBackend(Backend):
    """An ONNX graph run by some engine, with the numpy pre/post of the contract around ``_infer``."""

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.model_path = Path(model_path)
        self.input_dtype: Any = np.float32
        self.divisor, self.stride, self.threshold = SIZE_DIVISOR, MASK_STRIDE, MASK_THRESHOLD

    def _onnx_reason(self) -> str:
        if self.model_path.suffix.lower() != ".onnx":
            return f"needs an ONNX file, got {self.model_path.name}"
        if not self.model_path.is_file():
            return f"{self.model_path} does not exist"
        return ""

    def _infer(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        raise NotImplementedError

    def _require_outputs(self, names: set[str]) -> None:
        """The graph must give every output of the contract."""
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise ValueError(f"{self.model_path}: graph lacks outputs {missing} (contract: {list(OUTPUT_NAMES)})")

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        t0 = time.perf_counter_ns()
        x, sizes = preprocess_numpy(images, self.imgsz, self.divisor, self.input_dtype)
        t1 = time.perf_counter_ns()
        outs = self._infer(x)
        t2 = time.perf_counter_ns()
        self.last_results = postprocess_numpy(outs, images, sizes, self.stride, self.threshold)
        t3 = time.perf_counter_ns()
        return {"pre": _ms(t0, t1), "infer": _ms(t1, t2), "post": _ms(t2, t3),
                "dets": float(np.sum(outs["num_dets"]))}


def ort_spin() -> str:
    """ORT's intra-op spin-wait setting the runtime uses: "1" only when BOXSEG_ORT_SPIN=1
    (runtime/csrc/ort_backend.cpp)."""
    return "1" if os.environ.get("BOXSEG_ORT_SPIN", "").startswith("1") else "0"


class OrtBackend(_GraphBackend):
    """The bare ONNX Runtime session; numpy pre/post around ``session.run``."""

    name = "ort"

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(model_path, device, threads)
        self.session: Any = None
        self.input_name = "images"

    def available(self) -> tuple[bool, str]:
        reason = self._onnx_reason()
        if reason:
            return False, reason
        import onnxruntime as ort

        if self.device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return True, ""

    def prepare(self, imgsz: int, batch: int) -> None:
        super().prepare(imgsz, batch)
        if self.session is not None:
            return
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        # The same spin-wait setting as the runtime's session (off unless BOXSEG_ORT_SPIN=1), so the two are
        # compared on equal terms: at 320 px batch 1 spinning alone is worth 8-10% on an idle 2-core machine.
        opts.add_session_config_entry("session.intra_op.allow_spinning", ort_spin())
        providers = ["CUDAExecutionProvider"] if self.device.startswith("cuda") else []
        self.session = ort.InferenceSession(str(self.model_path), opts, providers=providers + ["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        self.divisor, self.stride, self.threshold = _contract_values(
            self.session.get_modelmeta().custom_metadata_map)
        self._require_outputs({o.name for o in self.session.get_outputs()})

    def _infer(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES, self.session.run(list(OUTPUT_NAMES), {self.input_name: x})))

    def close(self) -> None:
        self.session = None


class OpenVinoBackend(_GraphBackend):
    """OpenVINO on the ONNX file (``Core.read_model`` reads ONNX directly), compiled for CPU with
    ``INFERENCE_NUM_THREADS`` = threads and a LATENCY performance hint; numpy pre/post as ``OrtBackend``."""

    name = "openvino"

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(model_path, device, threads)
        self.compiled: Any = None
        self.request: Any = None

    def available(self) -> tuple[bool, str]:
        reason = self._onnx_reason()
        if reason:
            return False, reason
        if self.device != "cpu":
            return False, f"the OpenVINO backend runs on the CPU, not {self.device}"
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            return False, f"openvino is not installed (pip install 'boxseg[openvino]'): {_short(exc)}"
        return True, ""

    def prepare(self, imgsz: int, batch: int) -> None:
        super().prepare(imgsz, batch)
        if self.compiled is not None:
            return
        import openvino as ov
        from boxseg.export.metadata import read_onnx_metadata

        core = ov.Core()
        model = core.read_model(str(self.model_path))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._require_outputs({name for out in self.compiled.outputs for name in out.get_names()})
        self.input_dtype = np.uint8 if self.compiled.input(0).get_element_type() == ov.Type.u8 else np.float32
        self.divisor, self.stride, self.threshold = _contract_values(read_onnx_metadata(self.model_path))

    def _infer(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        self.request.infer({0: x})
        return {n: np.asarray(self.request.get_tensor(n).data) for n in OUTPUT_NAMES}

    def close(self) -> None:
        self.request = None
        self.compiled = None


# ---------------------------------------------------------------- boxseg.runtime


class RuntimeBackend(Backend):
    """``boxseg.runtime.Predictor``: uint8 image in, full-resolution masks out, stage times from the predictor."""

    name = "runtime"

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.model_path = Path(model_path)
        self.predictor: Any = None

    def available(self) -> tuple[bool, str]:
        if self.model_path.suffix.lower() != ".onnx":
            return False, f"needs an ONNX file, got {self.model_path.name}"
        from boxseg.runtime import Predictor

        try:
            self.predictor = Predictor(self.model_path, device=self.device, threads=self.threads or 0)
        except Exception as exc:  # noqa: BLE001 - e.g. the C++ core is not compiled: a skip reason
            return False, f"Predictor({self.model_path.name}) failed: {_short(exc)}"
        return True, ""

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        outs = self.predictor.predict_batch(list(images))
        timings = self.predictor.last_timings
        self.last_results = [(out["boxes"], out["masks"]) for out in outs]
        result: Stages = {k: float(timings[f"{k}_ms"]) for k in ("pre", "infer", "post")}
        result["dets"] = float(sum(len(out["scores"]) for out in outs))
        return result

    def close(self) -> None:
        self.predictor = None


# ---------------------------------------------------------------- TensorRT


class TensorRTBackend(_GraphBackend):
    """A TensorRT engine: loaded from ``.engine``/``.plan`` (metadata from the exporter's ``.json`` sidecar) or
    built in FP32 from the ONNX file by ``boxseg.export.tensorrt.build_engine`` with one input profile spanning
    the graph's smallest side..``max_imgsz`` and 1..``max_batch``; run by ``boxseg.export.tensorrt.EngineRunner``
    (input and outputs copied between host and GPU inside ``infer``). Needs ``tensorrt`` and a CUDA GPU."""

    name = "tensorrt"

    def __init__(self, model_path: str | Path, device: str = "cuda", threads: int | None = None,
                 max_imgsz: int = 1024, max_batch: int = 8) -> None:
        super().__init__(model_path, device if device.startswith("cuda") else "cuda", threads)
        self.max_imgsz, self.max_batch = max_imgsz, max_batch
        self.runner: Any = None
        self._build_dir: Path | None = None

    def available(self) -> tuple[bool, str]:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return False, "tensorrt is not installed (pip extra `tensorrt`)"
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU visible"
        if self.model_path.suffix.lower() not in (".onnx", ".engine", ".plan"):
            return False, f"needs an ONNX file or a TensorRT engine, got {self.model_path.name}"
        return True, ""

    def prepare(self, imgsz: int, batch: int) -> None:
        super().prepare(imgsz, batch)
        if self.runner is not None:
            return
        from boxseg.export.metadata import read_onnx_metadata, read_sidecar
        from boxseg.export.tensorrt import EngineProfile, EngineRunner, build_engine

        if self.model_path.suffix.lower() in (".engine", ".plan"):
            engine, meta = self.model_path, read_sidecar(self.model_path)
        else:
            meta = read_onnx_metadata(self.model_path)
            low = pad_to(int(meta.get("boxseg.min_size", SIZE_DIVISOR)), SIZE_DIVISOR)
            top = max(low, pad_to(self.max_imgsz, SIZE_DIVISOR))
            full = (self.max_batch, 3, top, top)
            self._build_dir = Path(tempfile.mkdtemp(prefix="boxseg-bench-trt-"))
            engine = self._build_dir / (self.model_path.stem + ".engine")
            build_engine(self.model_path, engine, profile=EngineProfile((1, 3, low, low), full, full), metadata=meta)
        self.runner = EngineRunner(engine)
        self.divisor, self.stride, self.threshold = _contract_values(meta)

    def _infer(self, x: np.ndarray) -> Mapping[str, np.ndarray]:
        return self.runner(x)

    def close(self) -> None:
        self.runner = None
        if self._build_dir is not None:
            shutil.rmtree(self._build_dir, ignore_errors=True)
            self._build_dir = None


# ---------------------------------------------------------------- export hook


def export_checkpoint_to_onnx(checkpoint: str | Path, out_dir: str | Path) -> tuple[Path | None, str]:
    """Export a checkpoint to ONNX with ``boxseg.export.export``. Returns (path, "") or (None, reason)."""
    from boxseg.export import export, get_format

    ok, reason = get_format("onnx").available()
    if not ok:
        return None, reason
    out = Path(out_dir) / (Path(checkpoint).stem + ".onnx")
    try:
        result = export(checkpoint, "onnx", out)
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes a skip reason
        return None, f"ONNX export of {Path(checkpoint).name} failed: {_short(exc)}"
    return Path(result.path), ""
