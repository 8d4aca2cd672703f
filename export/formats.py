"""The one table of export formats.

Everything that needs to know which formats exist reads this table: the CLI choices and help, option validation
(with a close-match suggestion for a mistyped name), dispatch to the exporter function, and the bench loop
(`bench_backends` names the `boxseg bench latency` backends that run the exported file).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from boxseg.export.errors import ExportError


@dataclass(frozen=True)
class ExportFormat:
    name: str  # value of --format
    title: str  # human name (tables, summaries)
    suffix: str  # file suffix of the artefact
    exporter: str  # "module:function" that writes the artefact
    requires: tuple[str, ...]  # importable modules needed to write it
    extra: str | None  # pip extra that provides `requires`
    half: bool  # --half supported
    int8: bool  # --int8 supported
    needs_gpu: bool  # building needs a CUDA GPU
    bench_backends: tuple[str, ...]  # `boxseg bench latency` backends that run this artefact
    calib_images: int = 64  # default --calib-images for --int8
    half_with_int8: bool = False  # --half and --int8 together (TensorRT: fp16 kernels where int8 has none)

    def available(self) -> tuple[bool, str]:
        """(True, "") when this machine can write the format, else (False, reason)."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                hint = f" (pip install 'boxseg[{self.extra}]')" if self.extra else ""
                return False, f"format {self.name!r} needs the Python package {module!r}, which is not installed{hint}"
        return True, ""

    def exporter_fn(self) -> Callable:
        module, _, function = self.exporter.partition(":")
        return getattr(importlib.import_module(module), function)


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        name="onnx", title="ONNX", suffix=".onnx", exporter="boxseg.export.onnx:export_onnx_file",
        requires=("onnx", "onnxscript", "onnxruntime"), extra=None, half=True, int8=True, needs_gpu=False,
        bench_backends=("ort", "runtime"), calib_images=64,
    ),
    ExportFormat(
        name="tensorrt", title="TensorRT", suffix=".engine", exporter="boxseg.export.tensorrt:export_engine_file",
        requires=("tensorrt",), extra="tensorrt", half=True, int8=True, needs_gpu=True,
        bench_backends=("tensorrt",), calib_images=512, half_with_int8=True,
    ),
)


def format_names() -> list[str]:
    return [f.name for f in FORMATS]


def get_format(name: str) -> ExportFormat:
    """The table row for `name` (case-insensitive); an ExportError with a close-match suggestion otherwise."""
    key = name.strip().lower()
    for fmt in FORMATS:
        if fmt.name == key:
            return fmt
    close = difflib.get_close_matches(key, format_names(), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ExportError(f"unknown export format {name!r}.{hint} Choose one of: {', '.join(format_names())}.")


def validate_options(fmt: ExportFormat, *, half: bool = False, int8: bool = False,
                     calib_data: object | None = None) -> None:
    """Check option combinations against the table before any work is done."""
    if half and not fmt.half:
        supported = ", ".join(f.name for f in FORMATS if f.half) or "none"
        raise ExportError(f"--half is not supported for format {fmt.name!r} (supported by: {supported}).")
    if int8 and not fmt.int8:
        supported = ", ".join(f.name for f in FORMATS if f.int8) or "none"
        raise ExportError(f"--int8 is not supported for format {fmt.name!r} (supported by: {supported}).")
    if half and int8 and not fmt.half_with_int8:
        raise ExportError(f"--half and --int8 are two precisions of one {fmt.title} artefact; pass one of them.")
    if int8 and calib_data is None:
        raise ExportError("--int8 needs calibration images: pass --calib DIR (a COCO-format folder with "
                          "annotations.json and images/, or a folder of images).")
    if calib_data is not None and not int8:
        raise ExportError("--calib is only used with --int8; add --int8 or drop --calib.")
