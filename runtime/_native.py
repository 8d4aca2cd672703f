"""Locating and loading the compiled core and the ONNX Runtime library it dlopens. Never imports torch."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

_lock = threading.Lock()
_core: ModuleType | None = None

ORT_LIBRARY_ENV = "BOXSEG_ORT_LIBRARY"


def find_onnxruntime_library() -> Path:
    """The ONNX Runtime shared library of the installed `onnxruntime` / `onnxruntime-gpu` wheel.

    `BOXSEG_ORT_LIBRARY` overrides it. The wheel is located without importing it (no Python ORT start-up).
    """
    override = os.environ.get(ORT_LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{ORT_LIBRARY_ENV}={override}: no such file")
        return path
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "onnxruntime is not installed; install `onnxruntime` (CPU) or `onnxruntime-gpu` (CUDA), "
            f"or set {ORT_LIBRARY_ENV} to a libonnxruntime shared library"
        )
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    if sys.platform == "darwin":
        candidates = sorted(capi.glob("libonnxruntime*.dylib"))
    elif sys.platform == "win32":
        candidates = sorted(capi.glob("onnxruntime.dll"))
    else:
        # The wheel ships libonnxruntime.so.<version> (no soname link); skip the providers' helper libraries.
        candidates = sorted(p for p in capi.glob("libonnxruntime.so*") if "providers" not in p.name)
    if not candidates:
        raise RuntimeError(
            f"no ONNX Runtime shared library in {capi}; reinstall onnxruntime or set {ORT_LIBRARY_ENV}"
        )
    # Prefer the most specific name (libonnxruntime.so.1.31.1 over libonnxruntime.so).
    return max(candidates, key=lambda p: len(p.name))


def load_core() -> ModuleType:
    """Imports `boxseg.runtime._core` and loads ONNX Runtime into it (once per process)."""
    global _core
    with _lock:
        if _core is not None:
            return _core
        try:
            core = importlib.import_module("boxseg.runtime._core")
        except ImportError as exc:
            raise ImportError(
                "the compiled runtime boxseg.runtime._core is missing: build it with `pip install .` "
                f"(or `pip install -e .`) from the boxseg source tree ({exc})"
            ) from exc
        if not core.onnxruntime_loaded():
            core.load_onnxruntime(str(find_onnxruntime_library()))
        _core = core
        return core


def bundled_program(name: str) -> Path | None:
    """Path of a C++ program installed with the package in boxseg/runtime/bin, or None if not built."""
    spec = importlib.util.find_spec("boxseg.runtime._core")
    if spec is None or spec.origin is None:
        return None
    exe = Path(spec.origin).parent / "bin" / (name + (".exe" if sys.platform == "win32" else ""))
    return exe if exe.is_file() else None


def example_program() -> Path | None:
    """Path of the C++ example `boxseg_predict_image` installed with the package, or None if not built."""
    return bundled_program("boxseg_predict_image")
