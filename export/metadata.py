"""Model metadata carried inside the exported artefact, so the runtime needs no side files.

ONNX: `metadata_props` of the ModelProto, every value a string (docs/contracts.md, "Exported ONNX graph").
TensorRT: a serialized engine has no free-form metadata field, so the same string dict is written as a JSON
sidecar `<engine>.json` next to the engine (the engine itself stays a plain TensorRT plan that `trtexec
--loadEngine` and `IRuntime.deserialize_cuda_engine` accept unchanged).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from boxseg.export.errors import ExportError

from boxseg.contract import MASK_STRIDE, SIZE_DIVISOR

FORMAT_VALUE = "boxseg-onnx"
INPUT_FORMAT = "float32 NCHW RGB 0-255"

# Keys every exported model carries (docs/contracts.md). Extra `boxseg.*` keys may follow.
REQUIRED_KEYS: tuple[str, ...] = (
    "boxseg.format", "boxseg.version", "boxseg.class_names", "boxseg.mean", "boxseg.std",
    "boxseg.size_divisor", "boxseg.mask_stride", "boxseg.max_dets", "boxseg.preset", "boxseg.input_format",
    "boxseg.mask_threshold",
)


@dataclass(frozen=True)
class ModelMetadata:
    """Typed view of the string metadata."""

    version: str
    class_names: list[str]
    mean: list[float]
    std: list[float]
    size_divisor: int
    mask_stride: int
    max_dets: int
    preset: str
    input_format: str
    mask_threshold: float
    extra: dict[str, str]
    precision: str = "fp32"  # `boxseg.precision` (absent in models exported before int8/fp16 existed: fp32)


PRECISIONS = ("fp32", "fp16", "int8")  # values of `boxseg.precision`; inputs and outputs are fp32 in all of them


def build_metadata(*, class_names: Sequence[str], mean: Sequence[float], std: Sequence[float], max_dets: int,
                   preset: str, mask_threshold: float = 0.5, size_divisor: int = SIZE_DIVISOR,
                   mask_stride: int = MASK_STRIDE, extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """The string dict written into the model. `extra` keys are prefixed with `boxseg.` when they lack it."""
    from boxseg import __version__

    if len(mean) != 3 or len(std) != 3:
        raise ExportError(f"metadata: mean and std must have 3 values (RGB), got {list(mean)} and {list(std)}.")
    meta = {
        "boxseg.format": FORMAT_VALUE,
        "boxseg.version": __version__,
        "boxseg.class_names": json.dumps([str(c) for c in class_names]),
        "boxseg.mean": json.dumps([float(v) for v in mean]),
        "boxseg.std": json.dumps([float(v) for v in std]),
        "boxseg.size_divisor": str(int(size_divisor)),
        "boxseg.mask_stride": str(int(mask_stride)),
        "boxseg.max_dets": str(int(max_dets)),
        "boxseg.preset": str(preset),
        "boxseg.input_format": INPUT_FORMAT,
        "boxseg.mask_threshold": repr(float(mask_threshold)),
    }
    for key, value in (extra or {}).items():
        full = key if key.startswith("boxseg.") else f"boxseg.{key}"
        meta[full] = value if isinstance(value, str) else json.dumps(value)
    return meta


def parse_metadata(raw: Mapping[str, str], *, source: str = "model") -> ModelMetadata:
    """Validate and type the string dict; errors name the source and the key."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ExportError(f"{source}: missing boxseg metadata keys {missing}; was it exported by `boxseg export`?")
    if raw["boxseg.format"] != FORMAT_VALUE:
        raise ExportError(f"{source}: boxseg.format is {raw['boxseg.format']!r}, expected {FORMAT_VALUE!r}.")

    def load(key: str, kind: type):
        try:
            value = json.loads(raw[key])
        except json.JSONDecodeError as exc:
            raise ExportError(f"{source}: {key} is not valid JSON ({raw[key]!r}).") from exc
        if kind is list and not isinstance(value, list):
            raise ExportError(f"{source}: {key} must be a JSON list, got {raw[key]!r}.")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ExportError(f"{source}: {key} must be a number, got {raw[key]!r}.")
        return value

    precision = raw.get("boxseg.precision", "fp32")
    if precision not in PRECISIONS:
        raise ExportError(f"{source}: boxseg.precision is {precision!r}, expected one of {list(PRECISIONS)}.")
    known = set(REQUIRED_KEYS)
    return ModelMetadata(
        version=raw["boxseg.version"],
        class_names=[str(c) for c in load("boxseg.class_names", list)],
        mean=[float(v) for v in load("boxseg.mean", list)],
        std=[float(v) for v in load("boxseg.std", list)],
        size_divisor=int(load("boxseg.size_divisor", int)),
        mask_stride=int(load("boxseg.mask_stride", int)),
        max_dets=int(load("boxseg.max_dets", int)),
        preset=raw["boxseg.preset"],
        input_format=raw["boxseg.input_format"],
        mask_threshold=float(load("boxseg.mask_threshold", float)),
        extra={k: v for k, v in raw.items() if k not in known},
        precision=precision,
    )


def set_onnx_metadata(model, meta: Mapping[str, str]) -> None:
    """Write `meta` into `model.metadata_props` (an onnx.ModelProto), replacing keys that already exist."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for key, value in [*keep, *meta.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_onnx_metadata(model_or_path) -> dict[str, str]:
    """The `metadata_props` of an ONNX model (a path or a ModelProto) as a dict; weights are not loaded."""
    import onnx

    if isinstance(model_or_path, (str, os.PathLike)):
        model = onnx.load(os.fspath(model_or_path), load_external_data=False)
    else:
        model = model_or_path
    return {p.key: p.value for p in model.metadata_props}


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """Where the metadata of a TensorRT engine lives: `model.engine` -> `model.engine.json`."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | os.PathLike, meta: Mapping[str, str]) -> None:
    Path(path).write_text(json.dumps(dict(meta), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_sidecar(engine_path: str | os.PathLike) -> dict[str, str]:
    path = sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ExportError(f"{str(engine_path)!r}: metadata sidecar {str(path)!r} is missing.") from exc
    except json.JSONDecodeError as exc:
        raise ExportError(f"{str(path)!r}: not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ExportError(f"{str(path)!r}: expected a JSON object of string values.")
    return data
