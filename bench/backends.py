"""One small class per inference backend measured by `boxseg bench latency`.

Every backend takes the same input, a list of uint8 HWC RGB images, and does the whole job: pre-process (resize
so the long side is ``imgsz``, pad to a multiple of the size divisor, NCHW float32), inference (the exported
graph's contract: fixed-size padded detections, low-resolution mask probabilities), post-process (masks pasted
at the original resolution, only inside their boxes, thresholded to bool). ``run`` returns the stage times in
milliseconds and the number of detections, so the harness can put the pipeline's stages side by side:

- ``TorchBackend``: eager PyTorch from a checkpoint (``CondInst.inference``), pre/post in torch.
- ``OrtBackend``: the bare ``onnxruntime.InferenceSession`` on the ONNX file, pre/post in numpy. Its ``infer``
  time is the yardstick the runtime's C++ pre/post is measured against.
- ``RuntimeBackend``: ``boxseg.runtime.Predictor`` (stage times from ``predictor.last_timings`` when it has them).
  It runs at the image's own size, padded (its default: no resize), which equals the others' input because the
  bench's images already have their long side at ``imgsz``.
- ``TensorRTBackend``: a TensorRT engine (built from the ONNX file or loaded from ``.engine``/``.plan``), needs
  ``tensorrt`` and a CUDA GPU; pre/post in torch on the GPU.

``available()`` never raises: a missing dependency (model code, runtime module, GPU, TensorRT) is a reason string.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SIZE_DIVISOR = 32
MASK_STRIDE = 4
MASK_THRESHOLD = 0.5
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks", "num_dets")

Stages = dict[str, float | None]


def _ms(t0: int, t1: int) -> float:
    return (t1 - t0) / 1e6


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200]


# ---------------------------------------------------------------- shared numpy pre/post


def input_size(h: int, w: int, imgsz: int) -> tuple[int, int]:
    """The (h, w) an image is resized to so that its long side is ``imgsz`` (before padding)."""
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    scale = imgsz / max(h, w)
    # round half up, as the runtime does (Python's round() would round half to even)
    return max(1, math.floor(h * scale + 0.5)), max(1, math.floor(w * scale + 0.5))


def to_original(boxes: Any, input_hw: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """Boxes (n, 4) xyxy (numpy or torch) from the resized input frame to original pixels, clipped to the image."""
    h, w = out_hw
    fx, fy = w / input_hw[1], h / input_hw[0]
    if hasattr(boxes, "new_tensor"):  # torch
        return (boxes * boxes.new_tensor([fx, fy, fx, fy])).clamp(min=0).minimum(boxes.new_tensor([w, h, w, h]))
    out = boxes * np.asarray([fx, fy, fx, fy], dtype=boxes.dtype)
    return np.minimum(np.maximum(out, 0), np.asarray([w, h, w, h], dtype=boxes.dtype))


def preprocess_numpy(
    images: Sequence[np.ndarray], imgsz: int, divisor: int = SIZE_DIVISOR, dtype: Any = np.float32
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Resize (Pillow bilinear, only when the size changes), pad to ``divisor``, stack as NCHW.

    Returns the batch and each image's resized (h, w) before padding.
    """
    from PIL import Image

    resized: list[np.ndarray] = []
    for img in images:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected uint8 (H, W, 3) images, got {img.dtype} {img.shape}")
        nh, nw = input_size(img.shape[0], img.shape[1], imgsz)
        if (nh, nw) != img.shape[:2]:
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        resized.append(img)
    hp = math.ceil(max(r.shape[0] for r in resized) / divisor) * divisor
    wp = math.ceil(max(r.shape[1] for r in resized) / divisor) * divisor
    batch = np.zeros((len(resized), 3, hp, wp), dtype=dtype)
    for i, r in enumerate(resized):
        batch[i, :, : r.shape[0], : r.shape[1]] = r.transpose(2, 0, 1)
    return batch, [(r.shape[0], r.shape[1]) for r in resized]


def _axis_weights(start: int, stop: int, factor: float, stride: int, n_in: int) -> tuple[np.ndarray, ...]:
    """Bilinear source indices and weights for output pixels start..stop-1 (pixel centres, edge clamped)."""
    src = (np.arange(start, stop, dtype=np.float64) + 0.5) * (factor / stride) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def paste_masks_numpy(
    masks: np.ndarray,
    boxes: np.ndarray,
    out_hw: tuple[int, int],
    input_hw: tuple[int, int],
    stride: int = MASK_STRIDE,
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """Low-resolution mask probabilities (n, Hm, Wm) -> bool (n, H, W) at the original resolution ``out_hw``.

    ``boxes`` are xyxy in the model-input frame, where the image was resized to ``input_hw`` before padding.
    Same convention as ``boxseg.model.postprocess.paste_masks``: output pixel x is centred at x + 0.5, mask pixel
    i of the stride-s grid at s*i + s/2; bilinear sampling with the edge value repeated; only the pixels from
    floor(x0) to ceil(x1) - 1 of each box are computed (the rest stay False; none for a box of zero width or
    height, as in ``boxseg.runtime.reference``), so the cost is the box areas.
    """
    h, w = out_hw
    sy, sx = input_hw[0] / h, input_hw[1] / w
    n, hm, wm = masks.shape
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        bx0, by0, bx1, by1 = boxes[i].tolist()
        if not (bx1 > bx0 and by1 > by0):  # zero width or height: no pixels (as the runtime does)
            continue
        x0, y0 = max(0, math.floor(bx0 / sx)), max(0, math.floor(by0 / sy))
        x1, y1 = min(w, math.ceil(bx1 / sx)), min(h, math.ceil(by1 / sy))
        if x1 <= x0 or y1 <= y0:
            continue
        r0, r1, fy = _axis_weights(y0, y1, sy, stride, hm)
        c0, c1, fx = _axis_weights(x0, x1, sx, stride, wm)
        lo, hi = int(c0[0]), int(c1[-1]) + 1
        sub = masks[i, :, lo:hi]
        rows = sub[r0] * (1.0 - fy)[:, None] + sub[r1] * fy[:, None]
        vals = rows[:, c0 - lo] * (1.0 - fx) + rows[:, c1 - lo] * fx
        out[i, y0:y1, x0:x1] = vals > threshold
    return out


def paste_masks_torch(
    masks: Any, boxes: Any, out_hw: tuple[int, int], input_hw: tuple[int, int], stride: int = MASK_STRIDE,
    threshold: float = MASK_THRESHOLD,
) -> Any:
    """Pure-PyTorch reference of :func:`paste_masks_numpy`, the plain eager way: upsample every whole mask,
    crop, keep the box's pixels. Returns a bool tensor (n, H, W) on the masks' device."""
    import torch
    import torch.nn.functional as F

    h, w = out_hw
    sy, sx = input_hw[0] / h, input_hw[1] / w
    n, hm, wm = masks.shape
    if n == 0:
        return torch.zeros((0, h, w), dtype=torch.bool, device=masks.device)
    # Sample positions of every output pixel (the same mapping as the box-only version), edge clamped.
    ys = ((torch.arange(h, device=masks.device, dtype=torch.float64) + 0.5) * (sy / stride) - 0.5).clamp(0, hm - 1)
    xs = ((torch.arange(w, device=masks.device, dtype=torch.float64) + 0.5) * (sx / stride) - 0.5).clamp(0, wm - 1)
    gx = xs / max(wm - 1, 1) * 2 - 1
    gy = ys / max(hm - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float()
    up = F.grid_sample(masks[:, None].float(), grid[None].expand(n, h, w, 2), mode="bilinear",
                       padding_mode="border", align_corners=True)[:, 0]
    b = boxes.float().cpu().tolist()
    inside = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
    for i, (x0, y0, x1, y1) in enumerate(b):
        if not (x1 > x0 and y1 > y0):
            continue
        c0, c1 = max(0, math.floor(x0 / sx)), min(w, math.ceil(x1 / sx))
        r0, r1 = max(0, math.floor(y0 / sy)), min(h, math.ceil(y1 / sy))
        if c1 > c0 and r1 > r0:
            inside[i, r0:r1, c0:c1] = True
    return (up > threshold) & inside


def _torch_paste() -> Any:
    """The model package's box-only paste (the eager predictor's post-processing) if built, else the reference."""
    try:
        from boxseg.model.postprocess import paste_masks
    except ImportError:
        return paste_masks_torch

    def paste(masks: Any, boxes: Any, out_hw: tuple[int, int], input_hw: tuple[int, int],
              stride: int = MASK_STRIDE, threshold: float = MASK_THRESHOLD) -> Any:
        return paste_masks(masks, boxes, out_hw, input_hw, mask_stride=stride, threshold=threshold)

    return paste


def preprocess_torch(images: Sequence[np.ndarray], imgsz: int, device: Any, divisor: int = SIZE_DIVISOR
                     ) -> tuple[Any, list[tuple[int, int]]]:
    """Torch version of :func:`preprocess_numpy`: uint8 HWC list -> float32 NCHW on ``device``, padded."""
    import torch
    import torch.nn.functional as F

    h, w = images[0].shape[:2]
    if any(img.shape != images[0].shape for img in images):
        raise ValueError("preprocess_torch: images in one batch must share a size")
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()
    nh, nw = input_size(h, w, imgsz)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    hp, wp = math.ceil(nh / divisor) * divisor, math.ceil(nw / divisor) * divisor
    x = F.pad(x, (0, wp - nw, 0, hp - nh))
    return x.contiguous(), [(nh, nw)] * len(images)


def _field(dets: Any, name: str) -> Any:
    return dets[name] if isinstance(dets, Mapping) else getattr(dets, name)


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


def load_checkpoint_model(path: str | Path) -> Any:
    """Build the student ``CondInst`` from a checkpoint (contract format), on CPU, in eval mode.

    Raises (CheckpointError, ImportError, ...) with a clear reason; the caller turns it into "skipped".
    """
    from boxseg.train.checkpoint import load_checkpoint, load_model_weights

    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    ckpt = load_checkpoint(path)
    model = CondInst(ModelConfig.from_dict(dict(ckpt["config"]["model"])))
    load_model_weights(model, ckpt["model"], path)
    return model.eval()


class TorchBackend(Backend):
    """Eager PyTorch: ``model.inference`` on a checkpoint's student (or a given ``nn.Module``)."""

    name = "torch"

    def __init__(self, model_path: str | Path | None = None, *, model: Any = None, device: str = "cpu",
                 threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.model_path = Path(model_path) if model_path is not None else None
        self.model = model
        self._threads_before: int | None = None
        self._paste = _torch_paste()

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed"
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            return False, "no CUDA GPU visible to torch"
        if self.model is None:
            if self.model_path is None:
                return False, "no model given"
            if self.model_path.suffix.lower() != ".pt":
                return False, f"needs a checkpoint (.pt), got {self.model_path.name}"
            try:
                self.model = load_checkpoint_model(self.model_path)
            except Exception as exc:  # noqa: BLE001 - model code missing or checkpoint mismatch: a skip reason
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
                n = int(num[b])
                pasted = self._paste(masks[b, :n], boxes[b, :n], img.shape[:2], sizes[b])
                results.append((to_original(boxes[b, :n], sizes[b], img.shape[:2]).cpu().numpy(),
                                pasted.cpu().numpy()))
            t3 = time.perf_counter_ns()
        self.last_results = results
        return {"pre": _ms(t0, t1), "infer": _ms(t1, t2), "post": _ms(t2, t3), "dets": float(sum(num))}

    def close(self) -> None:
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None


# ---------------------------------------------------------------- onnxruntime


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The graph's ``metadata_props`` (strings), read without loading the weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


class OrtBackend(Backend):
    """The bare ONNX Runtime session; numpy pre/post around ``session.run``."""

    name = "ort"

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(device, threads)
        self.model_path = Path(model_path)
        self.session: Any = None
        self.input_name = "images"
        self.input_dtype: Any = np.float32
        self.divisor, self.stride, self.threshold = SIZE_DIVISOR, MASK_STRIDE, MASK_THRESHOLD

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "onnxruntime is not installed"
        if self.model_path.suffix.lower() != ".onnx":
            return False, f"needs an ONNX file, got {self.model_path.name}"
        if not self.model_path.is_file():
            return False, f"{self.model_path} does not exist"
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
        providers = ["CUDAExecutionProvider"] if self.device.startswith("cuda") else []
        self.session = ort.InferenceSession(str(self.model_path), opts, providers=providers + ["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        meta = self.session.get_modelmeta().custom_metadata_map
        self.divisor = int(meta.get("boxseg.size_divisor", SIZE_DIVISOR))
        self.stride = int(meta.get("boxseg.mask_stride", MASK_STRIDE))
        self.threshold = float(meta.get("boxseg.mask_threshold", MASK_THRESHOLD))
        missing = [n for n in OUTPUT_NAMES if n not in {o.name for o in self.session.get_outputs()}]
        if missing:
            raise ValueError(f"{self.model_path}: graph lacks outputs {missing} (contract: {list(OUTPUT_NAMES)})")

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        t0 = time.perf_counter_ns()
        x, sizes = preprocess_numpy(images, self.imgsz, self.divisor, self.input_dtype)
        t1 = time.perf_counter_ns()
        outs = self.session.run(list(OUTPUT_NAMES), {self.input_name: x})
        t2 = time.perf_counter_ns()
        boxes, _scores, _classes, masks, num = outs
        results = []
        for b, img in enumerate(images):
            n = int(num[b])
            pasted = paste_masks_numpy(masks[b, :n], boxes[b, :n], img.shape[:2], sizes[b], self.stride,
                                       self.threshold)
            results.append((to_original(boxes[b, :n], sizes[b], img.shape[:2]), pasted))
        t3 = time.perf_counter_ns()
        self.last_results = results
        return {"pre": _ms(t0, t1), "infer": _ms(t1, t2), "post": _ms(t2, t3), "dets": float(np.sum(num))}

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------- boxseg.runtime


def _import_predictor() -> Any:
    mod = importlib.import_module("boxseg.runtime")
    cls = getattr(mod, "Predictor", None)
    if cls is None:
        cls = importlib.import_module("boxseg.runtime.predictor").Predictor
    return cls


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
        try:
            cls = _import_predictor()
        except Exception as exc:  # noqa: BLE001 - an unbuilt runtime is a skip reason
            return False, f"boxseg.runtime.Predictor is not available ({_short(exc)})"
        try:
            params = inspect.signature(cls).parameters
            kwargs: dict[str, Any] = {"device": self.device}
            if self.threads and ("threads" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())):
                kwargs["threads"] = self.threads
            self.predictor = cls(str(self.model_path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. the C++ core is not compiled
            return False, f"Predictor({self.model_path.name}) failed: {_short(exc)}"
        return True, ""

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        stages: dict[str, float] = {"pre": 0.0, "infer": 0.0, "post": 0.0}
        if hasattr(self.predictor, "predict_batch"):
            outs = list(self.predictor.predict_batch(list(images)))
            timed = self._add_timings(stages)
        else:
            outs, timed = [], True
            for img in images:
                outs.append(self.predictor(img))
                timed = self._add_timings(stages) and timed
        self.last_results = [(out["boxes"], out.get("masks")) for out in outs]
        result: Stages = {k: (v if timed else None) for k, v in stages.items()}
        result["dets"] = float(sum(len(out["scores"]) for out in outs))
        return result

    def _add_timings(self, stages: dict[str, float]) -> bool:
        """Adds the predictor's last stage times ({"pre_ms", ...} or {"pre", ...}); False if it has none."""
        last = getattr(self.predictor, "last_timings", None)
        if not isinstance(last, Mapping):
            return False
        for k in stages:
            value = last.get(f"{k}_ms", last.get(k))
            if value is None:
                return False
            stages[k] += float(value)
        return True

    def close(self) -> None:
        close = getattr(self.predictor, "close", None)
        if callable(close):
            close()
        self.predictor = None


# ---------------------------------------------------------------- TensorRT


class TensorRTBackend(Backend):
    """A TensorRT engine: loaded from ``.engine``/``.plan`` (metadata from the exporter's ``.json`` sidecar) or
    built in FP32 from the ONNX file with one input profile spanning 32..``max_imgsz`` and 1..``max_batch``.
    Needs ``tensorrt`` and a CUDA GPU (torch CUDA tensors hold the buffers)."""

    name = "tensorrt"

    def __init__(self, model_path: str | Path, device: str = "cuda", threads: int | None = None,
                 max_imgsz: int = 1024, max_batch: int = 8) -> None:
        super().__init__(device if device.startswith("cuda") else "cuda", threads)
        self.model_path = Path(model_path)
        self.max_imgsz, self.max_batch = max_imgsz, max_batch
        self.engine: Any = None
        self.context: Any = None
        self._paste = _torch_paste()
        self.stride, self.threshold = MASK_STRIDE, MASK_THRESHOLD

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "tensorrt is not installed (pip extra `tensorrt`)"
        if importlib.util.find_spec("torch") is None:
            return False, "torch is needed for GPU buffers"
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU visible"
        if self.model_path.suffix.lower() not in (".onnx", ".engine", ".plan"):
            return False, f"needs an ONNX file or a TensorRT engine, got {self.model_path.name}"
        return True, ""

    def _build(self) -> None:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if self.model_path.suffix.lower() in (".engine", ".plan"):
            # the exporter writes the model metadata beside the engine: model.engine -> model.engine.json
            sidecar = self.model_path.with_name(self.model_path.name + ".json")
            meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
            self.engine = runtime.deserialize_cuda_engine(self.model_path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"{self.model_path}: TensorRT could not load the engine (built by another "
                                   "TensorRT version or for another GPU?)")
        else:
            meta = read_onnx_metadata(self.model_path)
        self.stride = int(meta.get("boxseg.mask_stride", MASK_STRIDE))
        self.threshold = float(meta.get("boxseg.mask_threshold", MASK_THRESHOLD))
        if self.engine is None:
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(self.model_path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RuntimeError(f"{self.model_path}: TensorRT cannot parse the graph: {errors}")
            config = builder.create_builder_config()  # FP32, like the ONNX graph; FP16/INT8: pass an .engine
            profile = builder.create_optimization_profile()
            name = network.get_input(0).name
            top = math.ceil(self.max_imgsz / SIZE_DIVISOR) * SIZE_DIVISOR
            profile.set_shape(name, (1, 3, SIZE_DIVISOR, SIZE_DIVISOR), (1, 3, top, top), (self.max_batch, 3, top, top))
            config.add_optimization_profile(profile)
            blob = builder.build_serialized_network(network, config)
            if blob is None:
                raise RuntimeError(f"{self.model_path}: TensorRT engine build failed")
            self.engine = runtime.deserialize_cuda_engine(blob)
        self.context = self.engine.create_execution_context()

    def prepare(self, imgsz: int, batch: int) -> None:
        super().prepare(imgsz, batch)
        if self.engine is None:
            self._build()

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)

    def _infer(self, x: Any) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                  trt.int64: torch.int64, trt.bool: torch.bool, trt.uint8: torch.uint8}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.context.set_input_shape(inputs[0], tuple(x.shape))
        self.context.set_tensor_address(inputs[0], x.data_ptr())
        outs: dict[str, Any] = {}
        for n in names:
            if n in inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(n))
            outs[n] = torch.empty(shape, dtype=dtypes[self.engine.get_tensor_dtype(n)], device=x.device)
            self.context.set_tensor_address(n, outs[n].data_ptr())
        stream = torch.cuda.current_stream(x.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return outs

    def run(self, images: Sequence[np.ndarray]) -> Stages:
        t0 = time.perf_counter_ns()
        x, sizes = preprocess_torch(images, self.imgsz, self.device)
        self.sync()
        t1 = time.perf_counter_ns()
        outs = self._infer(x)
        self.sync()
        t2 = time.perf_counter_ns()
        num = outs["num_dets"].tolist()
        self.last_results = []
        for b, img in enumerate(images):
            n = int(num[b])
            pasted = self._paste(outs["masks"][b, :n], outs["boxes"][b, :n], img.shape[:2], sizes[b],
                                 self.stride, self.threshold)
            boxes = to_original(outs["boxes"][b, :n].float(), sizes[b], img.shape[:2])
            self.last_results.append((boxes.cpu().numpy(), pasted.cpu().numpy()))
        t3 = time.perf_counter_ns()
        return {"pre": _ms(t0, t1), "infer": _ms(t1, t2), "post": _ms(t2, t3), "dets": float(sum(num))}

    def close(self) -> None:
        self.context = None
        self.engine = None


# ---------------------------------------------------------------- export hook


def export_checkpoint_to_onnx(checkpoint: str | Path, out_dir: str | Path) -> tuple[Path | None, str]:
    """Export a checkpoint to ONNX with ``boxseg.export.export``. Returns (path, "") or (None, reason)."""
    try:
        from boxseg.export import export
        from boxseg.export.formats import get_format
    except ImportError as exc:
        return None, f"the ONNX exporter is not available ({_short(exc)}); pass an .onnx file"
    ok, reason = get_format("onnx").available()
    if not ok:
        return None, reason
    out = Path(out_dir) / (Path(checkpoint).stem + ".onnx")
    try:
        result = export(checkpoint, "onnx", out)
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes a skip reason
        return None, f"ONNX export of {Path(checkpoint).name} failed: {_short(exc)}"
    return Path(result.path), ""
