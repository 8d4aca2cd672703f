"""The CMake side fails early and clearly: bad ONNX Runtime header overrides, too-old headers, and the TensorRT
option turned on where TensorRT is absent. (The successful configure+build is the package build itself.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not on PATH")


def fake_headers(folder: Path, api: int) -> Path:
    """Just enough of an ONNX Runtime include folder for the configure step (nothing is compiled)."""
    folder.mkdir(parents=True)
    (folder / "onnxruntime_c_api.h").write_text(f"#define ORT_API_VERSION {api}\n")
    (folder / "onnxruntime_cxx_api.h").write_text("\n")
    return folder


def configure(build: Path, *defines: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = ["cmake", "-S", str(RUNTIME_DIR), "-B", str(build), "-DBOXSEG_RUNTIME_PYTHON=OFF"]
    args += ["-DBOXSEG_RUNTIME_EXAMPLE=OFF", *defines]
    return subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_bad_header_override_is_a_clear_configure_error(tmp_path) -> None:
    proc = configure(tmp_path / "b1", f"-DONNXRUNTIME_INCLUDE_DIR={tmp_path / 'nowhere'}")
    assert proc.returncode != 0
    assert "does not contain onnxruntime_c_api.h" in proc.stderr


def test_old_headers_and_missing_tensorrt_are_clear_configure_errors(tmp_path) -> None:
    old = fake_headers(tmp_path / "old", 17)
    proc = configure(tmp_path / "b2", env={"BOXSEG_ORT_INCLUDE": str(old)})
    assert proc.returncode != 0
    assert "need >= 21" in proc.stderr
    good = fake_headers(tmp_path / "good", 21)
    proc = configure(
        tmp_path / "b3",
        "-DBOXSEG_WITH_TENSORRT=ON",
        "-DTensorRT_ROOT=/nonexistent",
        env={"BOXSEG_ORT_INCLUDE": str(good)},
    )
    if proc.returncode == 0:
        pytest.skip("TensorRT is installed here, so the option configures")
    assert "TensorRT was requested" in proc.stderr
