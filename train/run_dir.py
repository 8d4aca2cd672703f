"""The run folder of `boxseg train`: checked before anything in it is written.

A fresh run into a folder that already holds a checkpoint would replace last.pt, config.yaml and metrics.jsonl
without a word, so it is refused unless the user says what they want: ``--resume`` (continue that run) or
``--overwrite`` (start again; the old checkpoints are removed first so the folder never mixes two runs). Hidden
temporary files of a save that was killed are removed here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from boxseg.tempfiles import remove_stale_temp_files

CHECKPOINT_DIR = "checkpoints"
# What boxseg.train.checkpoint.save_checkpoint leaves behind when killed: .<name>.pt.XXXXXXXX.tmp
CHECKPOINT_TEMP_NAMES = r".+\.pt"


class RunDirError(ValueError):
    """The run folder cannot be used as asked (it holds a run the user did not say to resume or replace)."""


@dataclass
class RunDirState:
    removed_temp_files: list[Path] = field(default_factory=list)
    removed_checkpoints: list[Path] = field(default_factory=list)


def _is_main_process() -> bool:
    # Under torchrun every rank runs the CLI; only rank 0 deletes, all ranks refuse alike.
    return int(os.environ.get("RANK", "0")) == 0


def existing_checkpoints(out_dir: str | Path) -> list[Path]:
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".pt" and p.is_file() and not p.name.startswith("."))


def prepare_run_dir(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> RunDirState:
    """Refuse, clean up or clear `out_dir` for a training run; call it before the trainer writes anything."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other: --resume continues the run in the folder, "
                          "--overwrite replaces it")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; expected a run folder (new or existing)")
    state = RunDirState()
    existing = existing_checkpoints(out)
    if existing and not (resume or overwrite):
        names = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise RunDirError(
            f"run folder {out} already has a checkpoint ({names}); a new run would replace it and "
            f"{out / 'metrics.jsonl'}. Pass --resume to continue that run, --overwrite to replace it, or choose "
            f"another --out folder")
    if not _is_main_process():
        return state
    state.removed_temp_files = remove_stale_temp_files(out / CHECKPOINT_DIR, CHECKPOINT_TEMP_NAMES)
    if overwrite:
        for p in existing:
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            state.removed_checkpoints.append(p)
    return state
