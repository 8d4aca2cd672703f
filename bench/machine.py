"""What machine a benchmark ran on: CPU, cores, memory, OS, library versions, GPU and driver.

Library versions come from package metadata, so nothing is imported. torch is consulted for the GPU only when it
is already imported or ``with_torch=True``: importing it just to describe the machine costs seconds and memory.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

LIBRARIES = ("boxseg", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "tensorrt")


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask; all of them where the OS has none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_info() -> dict[str, Any]:
    """CPU model, logical cores, physical cores and the cores this process may use."""
    model = platform.processor() or platform.machine()
    physical: set[tuple[str, str]] = set()
    phys_id = core_id = ""
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and value:
            model = value
        elif key == "physical id":
            phys_id = value
        elif key == "core id":
            core_id = value
        elif not key:  # blank line ends one logical CPU's block
            if core_id:
                physical.add((phys_id, core_id))
            phys_id = core_id = ""
    if core_id:
        physical.add((phys_id, core_id))
    logical = os.cpu_count() or 0
    return {
        "cpu": model,
        "cores_logical": logical,
        "cores_physical": len(physical) or logical,
        "cores_usable": usable_cores(),
    }


def ram_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed distribution versions (None when absent), read from metadata without importing."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _nvidia_smi() -> list[dict[str, str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def gpu_info(with_torch: bool = False) -> dict[str, Any]:
    """GPU name(s), driver and CUDA version, from nvidia-smi and (when allowed) torch."""
    info: dict[str, Any] = {"gpu": None, "gpu_driver": None, "cuda": None}
    gpus = _nvidia_smi()
    if gpus:
        info["gpu"] = ", ".join(g["name"] for g in gpus)
        info["gpu_driver"] = gpus[0]["driver"]
    if with_torch or "torch" in sys.modules:
        try:
            import torch

            info["cuda"] = torch.version.cuda
            if torch.cuda.is_available():
                names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                info["gpu"] = info["gpu"] or ", ".join(names)
        except Exception as exc:  # noqa: BLE001 - a broken CUDA install must not break the report
            info["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return info


def machine_info(with_torch: bool = False) -> dict[str, Any]:
    """One flat-ish dict describing this machine, suitable for a report's "machine" field."""
    info: dict[str, Any] = {
        "os": platform.platform(),
        "python": platform.python_version(),
        **cpu_info(),
        "ram_gib": ram_gib(),
        **gpu_info(with_torch),
        "versions": library_versions(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
    return info
