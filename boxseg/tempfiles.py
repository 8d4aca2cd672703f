"""Leftovers of interrupted atomic saves: find and remove them at the next start.

Checkpoints and exports are written to ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")`` beside their final
path and renamed into place. A kill between the two (SIGKILL, OOM killer, power loss) leaves the hidden temporary
file behind, tens of megabytes for a checkpoint, empty for an export killed early. Nothing else names files this
way, so the next save into the same folder removes them.
"""

from __future__ import annotations

import re
from pathlib import Path

# mkstemp's random part: 8 characters from [a-z0-9_].
_RANDOM = r"[a-z0-9_]{8}"


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
