"""Writing checkpoint files: one ``.pt`` written atomically, with the RNG state (docs/contracts.md, "Checkpoint").
Reading and validating them is the model's side, `boxseg.model.checkpoint`, re-exported here.

Layout: ``{"format": "boxseg-checkpoint", "version": 1, "model", "teacher", "optimizer", "scheduler",
"iteration", "config", "class_names", "rng", "method", "cat_ids", "scaler"}``. ``iteration`` counts completed
iterations, so a run resumed from it starts at that index. ``method`` holds extra training-method state (e.g. a
memory bank); the teacher's weights have their own key. Everything is plain containers and tensors, so
``torch.load`` works with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boxseg.model.checkpoint import (  # noqa: F401 - the reading side, re-exported for the trainer's callers
    FORMAT,
    VERSION,
    CheckpointError,
    check_same_model,
    load_checkpoint,
    load_model_weights,
    model_config_differences,
)
from boxseg.tempfiles import atomic_file

# ---------------------------------------------------------------------------------------------- RNG state


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, in weights_only-loadable form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _as_tuple(x: Any) -> Any:
    # random.setstate needs tuples; a round trip through some serialisers yields lists.
    if isinstance(x, (list, tuple)):
        return tuple(_as_tuple(v) for v in x)
    return x


# ---------------------------------------------------------------------------------------------- save / load


def make_checkpoint(
    *,
    model: torch.nn.Module,
    iteration: int,
    config: dict[str, Any],
    class_names: list[str],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    teacher: torch.nn.Module | None = None,
    method_state: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    cat_ids: list[int] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "teacher": teacher.state_dict() if teacher is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "iteration": int(iteration),
        "config": config,
        "class_names": list(class_names),
        "rng": rng,
        "method": method_state or {},
        "cat_ids": list(cat_ids) if cat_ids is not None else None,  # COCO category id of each class index
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or kill at any point leaves either the previous file or the new one, never a partial file.
    """
    path = Path(path)
    with atomic_file(path) as f:
        torch.save(checkpoint, f)
    _fsync_dir(path.parent)  # a checkpoint is worth making the rename itself durable
    return path


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, harmless to skip there.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
