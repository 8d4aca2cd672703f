"""Atomic file writes, and the leftovers of interrupted ones.

Every file the project writes whole (checkpoints, exports, configs, reports, results, labels) goes to a hidden
``.<name>.XXXXXXXX.tmp`` beside its final path (`temp_beside`) and is renamed into place only when complete, so a
reader sees the old file or the new one, never a partial one. `atomic_file` and `write_atomic` are that primitive
for one file. A kill between the write and the rename (SIGKILL, OOM killer, power loss) leaves the temporary file
behind, tens of megabytes for a checkpoint, empty for an export killed early; nothing else names files this way,
so `remove_stale_temp_files` can remove them at the next start. Torch-free, so torch-free code (the label
store, the bench reports) shares it with the checkpoint writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# mkstemp's random part: 8 characters from [a-z0-9_].
_RANDOM = r"[a-z0-9_]{8}"


def temp_beside(path: str | Path) -> tuple[int, Path]:
    """Create ``.<name>.XXXXXXXX.tmp`` in `path`'s folder (same file system, so the rename is atomic) and return
    its open descriptor and path. Hidden, and in the one shape `stale_temp_files` recognises."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(tmp)


def default_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give (mkstemp makes 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that becomes `path` on success: flushed, fsynced, given the usual permissions and
    renamed over `path`. On any exception (KeyboardInterrupt included) the temporary file is removed and `path`
    is left as it was. A missing folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text is UTF-8) to `path` through `atomic_file`. Returns `path`."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def stale_temp_files(folder: str | Path, name_pattern: str) -> list[Path]:
    """Hidden ``.<name>.XXXXXXXX.tmp`` files in `folder` whose <name> matches the regex `name_pattern`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    rx = re.compile(rf"\.(?:{name_pattern})\.{_RANDOM}\.tmp")
    return sorted(p for p in folder.iterdir() if rx.fullmatch(p.name) and p.is_file() and not p.is_symlink())


def remove_stale_temp_files(folder: str | Path, name_pattern: str) -> list[Path]:
    """Remove what `stale_temp_files` finds; returns the paths removed (a file that vanished meanwhile is
    skipped, one that cannot be removed is left alone: cleaning up must never stop a run)."""
    removed = []
    for p in stale_temp_files(folder, name_pattern):
        try:
            p.unlink()
        except OSError:
            continue
        removed.append(p)
    return removed
