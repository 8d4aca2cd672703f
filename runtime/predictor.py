"""`boxseg.runtime.Predictor`: numpy in, numpy out, backed by the C++ core. Never imports torch.

    predictor = Predictor("model.onnx", device="cpu", threads=4)
    out = predictor(image)                   # image: uint8 (H, W, 3) RGB
    out["boxes"]    float32 (n, 4) xyxy in original pixels
    out["scores"]   float32 (n,)
    out["classes"]  int64 (n,) contiguous class indices (names: predictor.class_names)
    out["masks"]    bool (n, H, W), or with rle=True a list of COCO RLE dicts {"size": [H, W], "counts": str}
    predictor.last_timings   {"pre_ms", "infer_ms", "post_ms", "total_ms", "end_to_end_ms", ...} (this thread)

A batch gives each image exactly the detections it gets alone: images are grouped by padded input size and
each group is one graph run (a batch of equal-sized images is one run).

One Predictor may be shared by many threads; the GIL is released while the C++ core runs.
Environment: BOXSEG_ORT_LIBRARY picks the ONNX Runtime library (default: the installed onnxruntime wheel's);
BOXSEG_ORT_SPIN=1 turns ONNX Runtime's intra-op spin-waiting back on (off by default: spinning threads starve
the pre/post-processing pool that runs right before and after each inference).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from boxseg.runtime._native import load_core

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
# The core's limits (runtime/csrc/predictor.h), checked here first for messages that name the argument.
MAX_THREADS = 1024
MAX_RESIZE_SIDE = 16384
MODEL_SUFFIXES = (".onnx", ".engine", ".plan")


def _model_file(model_path: str | Path) -> Path:
    path = Path(model_path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
        hint = (f"; it contains {', '.join(str(p) for p in found[:3])}: pass one of those" if found
                else "; export one with `boxseg export --checkpoint RUN/checkpoints/last.pt --format onnx "
                     f"--out {path / 'model.onnx'}`")
        raise IsADirectoryError(f"{path} is a folder; expected an exported model file (.onnx, or .engine with "
                                f"the TensorRT backend){hint}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found; expected an exported model such as model.onnx "
                                f"(`boxseg export ... --out model.onnx`)")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file; expected an exported model file (.onnx)")
    return path


def _as_image(image: Any, index: int) -> np.ndarray:
    """Checks one input image; returns an array the core accepts (views stay views where possible)."""
    where = f"image {index}"
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{where}: expected a numpy uint8 array of shape (H, W, 3), got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: expected dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: expected shape (H, W, 3) RGB, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{where}: zero-size image {image.shape}; expected H, W >= 1")
    if any(s < 0 for n, s in zip(image.shape, image.strides) if n > 1):
        # The core reads any non-negative strides in place; flipped views are copied. A copy, not
        # np.ascontiguousarray: that returns a flipped array with a length-1 axis unchanged (numpy calls it
        # contiguous), negative stride and all. The core ignores strides of length-1 axes.
        image = image.copy()
    return image


class Predictor:
    """Runs an exported BoxSeg model (ONNX, or a TensorRT engine where built) on uint8 RGB images.

    Args:
        model_path: the exported `.onnx` file (or `.engine` with the TensorRT backend).
        device: "cpu", "cuda" or "cuda:N" ("cuda" needs onnxruntime-gpu: `pip install boxseg[gpu]`).
        threads: pre/post-processing pool size and inference threads (ONNX Runtime's capped at the machine's
            hardware threads); 0 = one per hardware thread; at most 1024. A thread that cannot be started (a
            container's process or memory limit) is a RuntimeError saying so.
        min_size, max_size: resize keeping the aspect ratio so the shorter side is min_size and the longer at
            most max_size (each ignored when 0); both 0 (default) runs at the original size, padded to the
            model's `boxseg.size_divisor`.
        model_resize: use the model's own resize rule instead (its `boxseg.test_size` / `boxseg.test_max_size`
            metadata, the PyTorch predictor's), so results match `boxseg predict --checkpoint`.
        score_threshold: drop detections scoring below this (the graph already caps and sorts them).
        mask_threshold: probability above which a pixel is foreground; None = the model's
            `boxseg.mask_threshold`.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        threads: int = 0,
        *,
        min_size: int = 0,
        max_size: int = 0,
        score_threshold: float = 0.0,
        mask_threshold: float | None = None,
        model_resize: bool = False,
    ) -> None:
        path = _model_file(model_path)
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        for name, value, top, example in (("threads", threads, MAX_THREADS, "4"),
                                          ("min_size", min_size, MAX_RESIZE_SIDE, "800"),
                                          ("max_size", max_size, MAX_RESIZE_SIDE, "1333")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= top:
                zero = "one per hardware thread" if name == "threads" else "off"
                raise ValueError(f"{name} must be an integer in 0..{top} (0 = {zero}), got {value!r}; "
                                 f"e.g. {name}={example}")
        if model_resize and (min_size or max_size):
            raise ValueError("pass either model_resize=True or min_size/max_size, not both")
        for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if value is None and name == "mask_threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
                    0.0 <= float(value) <= 1.0):  # also false for nan
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}; e.g. {name}=0.3")
        core = load_core()
        self.model_path = path
        self.device = device
        self._core = core.CorePredictor(
            str(path),
            device,
            int(threads),
            -1 if model_resize else int(min_size),
            -1 if model_resize else int(max_size),
            float(score_threshold),
            -1.0 if mask_threshold is None else float(mask_threshold),
        )
        info = self._core.info
        self.info: dict[str, Any] = info
        self.metadata: dict[str, str] = info["metadata"]
        self.class_names: list[str] = info["class_names"]
        self.size_divisor: int = info["size_divisor"]
        self.mask_stride: int = info["mask_stride"]
        self.mask_threshold: float = self._core.mask_threshold
        self.min_size, self.max_size = self._core.resize
        self.backend: str = self._core.backend
        self._local = threading.local()

    def __call__(self, image: np.ndarray, *, rle: bool = False) -> dict[str, Any]:
        """Detections for one uint8 (H, W, 3) RGB image."""
        return self.predict_batch([image], rle=rle)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray] | np.ndarray, *, rle: bool = False
    ) -> list[dict[str, Any]]:
        """Detections for several images (any sizes); one dict per image, in order.

        Images that pad to the same input size run as one graph call; others run in separate calls, so every
        image gets exactly the detections it gets alone (padding it to a larger neighbour's size would change
        them). `last_timings["runs"]` lists (images, padded H, padded W) per graph call."""
        if isinstance(images, np.ndarray):
            if images.ndim != 4:
                raise ValueError(
                    f"predict_batch: expected a list of (H, W, 3) images or a (B, H, W, 3) array, got {images.shape}"
                )
            images = list(images)
        if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
            raise TypeError(f"predict_batch: expected a list of images, got {type(images).__name__}")
        if len(images) == 0:
            raise ValueError("predict_batch: no images given")
        arrays = [_as_image(im, i) for i, im in enumerate(images)]
        start = time.perf_counter()
        detections, timings, runs = self._core.predict(arrays, bool(rle))
        timings["end_to_end_ms"] = (time.perf_counter() - start) * 1e3
        timings["batch"] = len(arrays)
        timings["runs"] = [tuple(r) for r in runs]
        timings["input_hw"] = (max(r[1] for r in runs), max(r[2] for r in runs))  # the largest padded input
        self._local.timings = timings
        return detections

    @property
    def last_timings(self) -> dict[str, Any] | None:
        """Stage timings (milliseconds) of this thread's last call: pre, infer, post, total (C++ side) and
        end_to_end (including the Python wrapper); None before the first call."""
        return getattr(self._local, "timings", None)

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.model_path)!r}, backend={self.backend!r}, classes={len(self.class_names)})"
        )
