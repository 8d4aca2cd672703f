"""What an export is asked to do (`ExportOptions`) and what it produced (`ExportResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ExportOptions:
    opset: int = 18
    dynamic: bool = True  # dynamic batch, height, width; False fixes them to batch x imgsz
    batch: int = 1  # largest batch (TensorRT profile max/opt); the traced batch of a static graph
    imgsz: tuple[int, int] = (640, 640)  # largest letterbox canvas (H, W); the input size of a static graph
    max_dets: int | None = None  # D; None = the model config's max_dets
    half: bool = False  # fp16: TensorRT fp16 kernels; ONNX fp16 weights/compute with fp32 inputs/outputs
    int8: bool = False  # int8: TensorRT entropy calibration; ONNX static QDQ quantization (export/quantize.py)
    calib_data: Path | None = None  # COCO-format folder (or image folder) for int8 calibration
    calib_images: int | None = None  # at most this many calibration images; None = the format's default
    slim: bool = True  # ONNX: onnxslim graph clean-up (export/slim.py)
    verify: bool = False  # compare the artefact with PyTorch before it is written
    verify_data: Path | None = None  # images for --verify; None = held-out synthetic scenes
    workspace_gb: float = 4.0  # TensorRT builder workspace
    timing_cache: Path | None = None  # TensorRT timing cache; None = <out folder>/boxseg-trt-timing.cache


@dataclass
class ExportResult:
    format: str
    path: Path
    files: list[Path]
    seconds: float  # whole export, wall clock
    size_bytes: int
    metadata: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["files"] = [str(f) for f in self.files]
        return d
