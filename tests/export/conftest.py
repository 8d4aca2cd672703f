"""Shared fixtures: a tiny student checkpoint (with a deliberately different teacher) and its dynamic ONNX export.

The dynamic export costs most of this folder's CPU time, so it is made once per test run: under pytest-xdist the
workers share one file, guarded by a file lock, in the run's common temporary folder.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from export_helpers import EXPORT_IMGSZ, make_student, write_checkpoint


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id.startswith("gw") else base  # xdist workers: the run's common folder


@pytest.fixture(scope="session")
def xdist_worker(request: pytest.FixtureRequest) -> str:
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, xdist_worker: str) -> dict:
    """{"checkpoint", "onnx", "result"}: the tiny student exported once (dynamic, opset 18) through the API."""
    from boxseg.export import export

    root = _shared_dir(tmp_path_factory, xdist_worker) / "boxseg-export-shared"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "result.json"
        if not done.exists():
            ckpt = write_checkpoint(root / "student.pt", make_student())
            result = export(ckpt, "onnx", root / "student.onnx", imgsz=EXPORT_IMGSZ)
            done.write_text(json.dumps(result.to_dict(), default=str))
    return {"checkpoint": root / "student.pt", "onnx": root / "student.onnx",
            "result": json.loads(done.read_text())}


@pytest.fixture(scope="session")
def student(exported: dict):
    from boxseg.export.source import load_student

    return load_student(exported["checkpoint"]).model
