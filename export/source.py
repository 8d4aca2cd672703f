"""The student model an export starts from: a BoxSeg training checkpoint, validated.

Only the checkpoint's `model` entry (the student's state dict) is loaded; the `teacher` entry is never read, so
an export can never ship the EMA teacher (BoxTeacher's public code ships the teacher; BoxSeg deploys the student).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxseg.export.errors import ExportError


@dataclass
class StudentSource:
    model: Any  # boxseg.model.condinst.CondInst in eval mode, student weights loaded
    class_names: list[str]
    preset: str
    iteration: int
    checkpoint: Path | None
    config: dict = field(default_factory=dict)  # the checkpoint's training config (plain dict)
    cat_ids: list[int] | None = None  # COCO category id of each class index, when the checkpoint has them


def student_from_model(model, class_names: list[str] | None = None, preset: str = "") -> StudentSource:
    """Wrap an in-memory CondInst (tests, notebooks): class names default to class0..classC-1."""
    names = list(class_names) if class_names is not None else [f"class{i}" for i in range(model.cfg.num_classes)]
    if len(names) != model.cfg.num_classes:
        raise ExportError(f"{len(names)} class names for a model with {model.cfg.num_classes} classes.")
    return StudentSource(model=model.eval(), class_names=names, preset=preset, iteration=0, checkpoint=None)


def load_student(checkpoint: str | Path) -> StudentSource:
    """Load and check a `boxseg-checkpoint` file and build the student from its config and `model` weights
    (`boxseg.model.checkpoint.model_from_checkpoint`); a bad file is an ExportError naming what is wrong."""
    from boxseg.model.checkpoint import CheckpointError, model_from_checkpoint

    path = Path(checkpoint)
    try:
        model, ckpt = model_from_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    return StudentSource(model=model, class_names=[str(n) for n in ckpt["class_names"]],
                         preset=str(ckpt["config"].get("preset") or ckpt["config"].get("method") or ""),
                         iteration=int(ckpt["iteration"]), checkpoint=path, config=ckpt["config"],
                         cat_ids=[int(c) for c in ckpt["cat_ids"]] if ckpt.get("cat_ids") else None)
