"""The one atomic writer (`boxseg.tempfiles`): a failed write keeps the old file and leaves nothing behind, a
write that completes leaves only the file, with the permissions a plain write gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boxseg.tempfiles import atomic_file, default_file_mode, stale_temp_files, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.json"  # a missing folder is created
    write_atomic(path, "old")
    write_atomic(path, "naïve ✓\n")
    assert path.read_bytes() == "naïve ✓\n".encode()
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    assert os.stat(path).st_mode & 0o777 == default_file_mode()


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_atomic(path, "a: 1\n")
    seen: list[Path] = []
    with pytest.raises(KeyboardInterrupt), atomic_file(path) as f:
        f.write(b"a: 2\n")
        seen.extend(stale_temp_files(tmp_path, r"config\.yaml"))  # the temporary file has the known shape
        raise KeyboardInterrupt
    assert len(seen) == 1
    assert path.read_text() == "a: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
