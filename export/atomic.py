"""Output files that appear whole or not at all.

Every artefact is written to a temporary name in the destination folder and renamed into place with
`os.replace` only after the exporter finished; any exception removes the temporary files, so a failed export
never leaves a partial file behind (and never clobbers a previous good one). A kill leaves no time for that: the
next export to the same path removes the hidden temporary files such a kill left.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from boxseg.export.errors import ExportError

from boxseg.tempfiles import default_file_mode, remove_stale_temp_files, temp_beside


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, before any expensive work, when `path` cannot be written."""
    out = Path(path).expanduser()
    if out.exists() and out.is_dir():
        raise ExportError(f"output path {str(out)!r} is a directory; expected a file path such as "
                          f"{str(out / 'model.onnx')!r}.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise ExportError(f"cannot write {str(out)!r}: its folder {str(parent)!r} does not exist.")
    if not parent.is_dir():
        raise ExportError(f"cannot write {str(out)!r}: {str(parent)!r} is not a folder.")
    # os.access says yes to root even on read-only mounts, so really create (and remove) a file.
    try:
        fd, probe = tempfile.mkstemp(prefix=".boxseg-probe-", dir=parent)
    except OSError as exc:
        raise ExportError(f"cannot write {str(out)!r}: folder {str(parent)!r} is not writable ({exc.strerror}).") \
            from exc
    os.close(fd)
    os.unlink(probe)
    return out


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield temporary paths (same folders, hidden names) for `paths`; rename them all into place on success.

    The exporters write by path, several files at once, so this is the multi-file form of
    `boxseg.tempfiles.atomic_file`, with the same temporary names and permissions. On any exception every
    temporary file is removed and the exception propagates. The renames happen last and in order, so a reader
    never sees a new main file next to an old sidecar for longer than one rename.
    """
    finals = [Path(p) for p in paths]
    for final in finals:  # leftovers of an export to the same path that was killed before it could clean up
        remove_stale_temp_files(final.parent, re.escape(final.name))
    temps: list[Path] = []
    try:
        for final in finals:
            fd, tmp = temp_beside(final)
            os.close(fd)
            temps.append(tmp)
        yield temps
        for tmp in temps:
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise ExportError(f"internal error: the exporter did not write {str(tmp)!r}.")
        mode = default_file_mode()
        for tmp, final in zip(temps, finals):
            os.chmod(tmp, mode)
            os.replace(tmp, final)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
