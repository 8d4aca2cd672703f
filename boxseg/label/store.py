"""Where `boxseg label` keeps its results: partial results that survive an interruption, and the final file.

OUT/annotations.json is written once, at the end, atomically (a temporary file beside it, fsync, rename). Until
then, finished images go to OUT/.boxseg-label/: `state.json` (what is being labelled, with what) and
`part-NNNNNN.json` files, each written atomically every `save_every` images, so a kill loses at most the images
since the last part. `--resume` reads them back when `state.json` matches the new run's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from boxseg.data.errors import DataError
from boxseg.tempfiles import remove_stale_temp_files, write_atomic

ANNOTATIONS = "annotations.json"
STATE_DIR = ".boxseg-label"
STATE_FILE = "state.json"
_TEMP_NAMES = r"annotations\.json|index\.html|state\.json|part-\d+\.json"


class LabelError(DataError):
    """A `boxseg label` problem with its inputs or its output folder (a DataError: the CLI prints it plainly)."""


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Temporary files of a killed write in OUT or its state folder."""
    return (remove_stale_temp_files(out_dir, _TEMP_NAMES)
            + remove_stale_temp_files(out_dir / STATE_DIR, _TEMP_NAMES))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dumps(data: Any) -> str:
    # One fixed formatting, so an interrupted-and-resumed run writes the same bytes as an uninterrupted one.
    return json.dumps(data, separators=(",", ":"), sort_keys=False)


class PartialResults:
    """Finished images of an unfinished run: `{image_id: [per-annotation label fields]}` in OUT/.boxseg-label/."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any]) -> None:
        self.dir = Path(out_dir) / STATE_DIR
        self.fingerprint = fingerprint
        self.done: dict[int, list[dict]] = {}
        self._pending: dict[int, list[dict]] = {}
        self._parts = 0

    @property
    def exists(self) -> bool:
        return (self.dir / STATE_FILE).is_file()

    def start(self) -> None:
        """A fresh run: drop any earlier partial results, then record the fingerprint."""
        self.discard()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / STATE_FILE, json.dumps({"fingerprint": self.fingerprint}, indent=1))

    def load(self) -> None:
        """Read back earlier parts; LabelError when they were made from other inputs or options."""
        try:
            state = json.loads((self.dir / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LabelError(f"{self.dir / STATE_FILE}: unreadable ({e}); start over with --overwrite") from e
        diffs = fingerprint_differences(state.get("fingerprint") or {}, self.fingerprint)
        if diffs:
            raise LabelError(f"{self.dir}: the unfinished labelling there was started with other inputs or "
                             f"options ({'; '.join(diffs)}); resume with the same ones, or start over with "
                             "--overwrite")
        for part in sorted(self.dir.glob("part-*.json")):
            try:
                chunk = json.loads(part.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise LabelError(f"{part}: unreadable partial results ({e}); start over with --overwrite") from e
            self.done.update({int(k): v for k, v in chunk.items()})
            self._parts = max(self._parts, int(part.stem.split("-")[1]) + 1)

    def add(self, image_id: int, labels: list[dict]) -> None:
        self._pending[image_id] = labels
        self.done[image_id] = labels

    def flush(self) -> None:
        if not self._pending:
            return
        write_atomic(self.dir / f"part-{self._parts:06d}.json", dumps({str(k): v for k, v in self._pending.items()}))
        self._parts += 1
        self._pending = {}

    def discard(self) -> None:
        if self.dir.is_dir():
            shutil.rmtree(self.dir)


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} before, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
