"""Reading BoxSeg checkpoints and building the model they hold (docs/contracts.md, "Checkpoint").

The model owns this side: evaluation, prediction, export and the latency bench all build the student from a
checkpoint here, without the training package. Writing (and the RNG state) is `boxseg.train.checkpoint`.

Layout: ``{"format": "boxseg-checkpoint", "version": 1, "model", "teacher", "optimizer", "scheduler",
"iteration", "config", "class_names", "rng", "method", "cat_ids", "scaler"}``. Everything is plain containers and
tensors, so ``torch.load`` works with ``weights_only=True``. Only ``model`` (the student's weights) is read to
build a model; the EMA teacher is never deployed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FORMAT = "boxseg-checkpoint"
VERSION = 1

# Model-config keys that do not change the network's parameters: a mismatch there is not "another model".
_NON_ARCHITECTURE_KEYS = {"pretrained", "pretrained_path", "backbone_weights", "weights"}


class CheckpointError(ValueError):
    """A checkpoint file that is missing, of the wrong kind, or made for a different model."""


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


def student_config(ckpt: dict[str, Any], path: str | Path) -> Any:
    """The ``ModelConfig`` to rebuild a checkpoint's student. Every weight comes from the checkpoint, so the
    ImageNet weights are not loaded (the file the run used may not exist here); the norm layers' kind may depend
    on ``pretrained`` ("auto"), so it is resolved first, from the value the run trained with."""
    from boxseg.config import from_dict
    from boxseg.model.backbone.norm import resolve_norm
    from boxseg.model.config import ModelConfig

    model_dict = dict(ckpt["config"]["model"])
    try:
        model_dict["backbone_norm"] = resolve_norm(model_dict.get("backbone_norm", "auto"),
                                                   model_dict.get("pretrained", True))
        model_dict["pretrained"] = False
        return from_dict(ModelConfig, model_dict, source="config.model")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: field 'config.model' does not describe a model: {exc}") from exc


def model_from_checkpoint(checkpoint: str | Path | dict[str, Any], device: torch.device | str = "cpu", *,
                          path: str | Path | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The student ``CondInst`` of a checkpoint file (or of an already loaded checkpoint dict, ``path`` naming
    it in errors), in eval mode on ``device``, and the checkpoint. :class:`CheckpointError` names what is wrong."""
    from boxseg.model.condinst import CondInst

    if isinstance(checkpoint, dict):
        ckpt, path = checkpoint, path or "<in memory>"
    else:
        ckpt, path = load_checkpoint(checkpoint, map_location="cpu"), checkpoint
    cfg = student_config(ckpt, path)
    names = ckpt["class_names"]
    if not isinstance(names, list) or len(names) != cfg.num_classes:
        raise CheckpointError(f"checkpoint {path}: field 'class_names' must list {cfg.num_classes} names "
                              f"(config.model.num_classes), got {names!r}.")
    state = ckpt["model"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"checkpoint {path}: field 'model' must hold the student's state dict.")
    model = CondInst(cfg)
    load_model_weights(model, state, path, what="model")
    return model.to(device).eval(), ckpt
