"""Outputs appear whole or not at all; unwritable destinations fail before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from boxseg.export.atomic import atomic_outputs, check_output_path
from boxseg.export.errors import ExportError


def test_output_path_checks(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "m.onnx") == tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="is a directory"):
        check_output_path(tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "m.onnx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is not a folder"):
        check_output_path(tmp_path / "file" / "m.onnx")
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # the write probe left nothing behind


def test_success_renames_all_files_with_normal_permissions(tmp_path: Path) -> None:
    a, b = tmp_path / "m.engine", tmp_path / "m.engine.json"
    with atomic_outputs(a, b) as (ta, tb):
        assert ta.parent == tmp_path and ta.name.startswith(".m.engine.") and not a.exists()
        ta.write_bytes(b"plan")
        tb.write_text("{}")
    assert a.read_bytes() == b"plan" and b.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert a.stat().st_mode & 0o777 == 0o666 & ~mask


def test_failure_leaves_no_partial_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous good model")
    with pytest.raises(RuntimeError, match="exporter crashed"), atomic_outputs(out) as (tmp,):
        tmp.write_bytes(b"half a mod")
        raise RuntimeError("exporter crashed")
    assert out.read_bytes() == b"previous good model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_an_exporter_that_wrote_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="did not write"), atomic_outputs(tmp_path / "m.onnx"):
        pass
    assert list(tmp_path.iterdir()) == []
