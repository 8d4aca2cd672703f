"""Checkpoint files: one ``.pt`` written atomically, validated on load (docs/contracts.md, "Checkpoint").

Layout: ``{"format": "boxseg-checkpoint", "version": 1, "model", "teacher", "optimizer", "scheduler",
"iteration", "config", "class_names", "rng", "method", "cat_ids", "scaler"}``. ``iteration`` counts completed iterations, so a run
resumed from it starts at that index. ``method`` holds extra training-method state (e.g. a memory bank); the
teacher's weights have their own key. Everything is plain containers and tensors, so ``torch.load`` works with
``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boxseg.tempfiles import atomic_file

FORMAT = "boxseg-checkpoint"
VERSION = 1

# Model-config keys that do not change the network's parameters: a mismatch there is not "another model".
_NON_ARCHITECTURE_KEYS = {"pretrained", "pretrained_path", "backbone_weights", "weights"}


class CheckpointError(ValueError):
    """A checkpoint file that is missing, of the wrong kind, or made for a different model."""


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a BoxSeg checkpoint; :class:`CheckpointError` names what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a checkpoint file such as "
                              f"{path / 'checkpoints' / 'last.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise CheckpointError(f"checkpoint {path}: {_load_failure(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        keys = f" (top-level keys: {sorted(map(str, ckpt))[:8]})" if isinstance(ckpt, dict) else ""
        raise CheckpointError(
            f"checkpoint {path}: field 'format' is {found!r}; expected '{FORMAT}'{keys}. "
            "Is this a BoxSeg training checkpoint (RUN/checkpoints/*.pt)?"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"checkpoint {path}: field 'version' is {version!r}; this boxseg reads versions <= {VERSION}"
        )
    for key in ("model", "config", "iteration", "class_names"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path}: missing field '{key}'")
    if not isinstance(ckpt["config"], dict) or "model" not in ckpt["config"]:
        raise CheckpointError(f"checkpoint {path}: field 'config' has no 'model' section")
    return ckpt


def _load_failure(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, without torch's advice to retry with
    weights_only=False: that runs arbitrary code from the file, which a user must not do for a file they
    cannot vouch for, and a BoxSeg checkpoint never needs it."""
    import pickle
    import re

    expected = ("expected a BoxSeg training checkpoint written by `boxseg train` (RUN/checkpoints/last.pt), "
                "which holds only tensors and plain containers")
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text.lower():
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", text)
        detail = found.group(1).strip() if found else "it holds Python objects other than tensors"
        detail = re.split(r"\s*Please use `torch\.serialization", detail)[0].rstrip(". ")
        if detail.startswith("Unsupported operand"):  # not a pickle stream at all: random or other bytes
            return f"not a torch checkpoint (its bytes do not unpickle: {detail}); {expected}"
        return (f"not a BoxSeg checkpoint: it holds something other than tensors and plain containers "
                f"({detail}), and boxseg never unpickles arbitrary objects; {expected}")
    if isinstance(exc, EOFError) or not text:
        return f"the file is empty or cut short ({type(exc).__name__}); {expected}"
    first = text.strip().splitlines()[0][:160]
    return f"not a readable torch checkpoint ({type(exc).__name__}: {first}); {expected}"


def model_config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Architecture-relevant keys whose values differ, as ``key: stored -> current`` lines."""
    diffs = []
    for key in sorted(set(stored) | set(current)):
        if key in _NON_ARCHITECTURE_KEYS:
            continue
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if a != b:
            diffs.append(f"model.{key}: {a!r} in the checkpoint, {b!r} in the config")
    return diffs


def check_same_model(ckpt: dict[str, Any], model_cfg: dict[str, Any], path: str | Path) -> None:
    diffs = model_config_differences(ckpt["config"]["model"], model_cfg)
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was made for another model:\n  " + "\n  ".join(diffs)
        )


def load_model_weights(model: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str = "model") -> None:
    """``load_state_dict`` with an error that names the file and the first mismatching keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
        for k, v in own.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"checkpoint {path}: '{what}' weights do not fit this model: " + "; ".join(parts))
    model.load_state_dict(state)
