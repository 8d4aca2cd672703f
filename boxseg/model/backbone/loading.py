"""Loading a pretrained backbone checkpoint with every key mismatch reported (never silently ignored)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded into a backbone."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file: left at their init
    unexpected: list[str] = field(default_factory=list)  # in the file, unknown to the model
    shape_mismatch: list[str] = field(default_factory=list)  # "key: file (..) vs model (..)"
    ignored: list[str] = field(default_factory=list)  # known not-needed entries (classifier head)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} classifier entries")
        if self.missing:
            parts.append(f"MISSING (left at random init): {few(self.missing)}")
        if self.unexpected:
            parts.append(f"UNEXPECTED (not used): {few(self.unexpected)}")
        if self.shape_mismatch:
            parts.append(f"SHAPE MISMATCH (not loaded): {few(self.shape_mismatch)}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict; accepts a bare state dict or {"state_dict"|"model": ...}."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained backbone checkpoint {p}: no such file")
    obj = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"pretrained backbone checkpoint {p}: expected a state dict of tensors, got {type(obj)}")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: str,
    ignore_prefixes: Iterable[str] = (),
    strict: bool = False,
) -> LoadReport:
    """Copy matching tensors from `state` into `model` and report every key that did not match.

    Entries whose key starts with one of `ignore_prefixes` (a classifier head the backbone does not build) are
    listed as ignored. `num_batches_tracked` counters are bookkeeping and neither loaded nor reported. With
    strict=True any missing/unexpected/mismatched key raises; otherwise it is reported with a warning.
    """
    ignore = tuple(ignore_prefixes)
    own = model.state_dict()
    report = LoadReport(path=path)
    to_load: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        if ignore and k.startswith(ignore):
            report.ignored.append(k)
        elif k not in own:
            report.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            report.shape_mismatch.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
        else:
            to_load[k] = v
    mismatched = {m.split(":")[0] for m in report.shape_mismatch}
    report.missing = [k for k in own if k not in to_load and k not in mismatched]
    with torch.no_grad():
        for k, v in to_load.items():
            own[k].copy_(v.to(own[k].dtype))
    report.loaded = sorted(to_load)
    if not report.ok:
        if strict:
            raise ValueError(f"pretrained backbone: key mismatch loading {report.summary()}")
        warnings.warn(f"pretrained backbone: key mismatch loading {report.summary()}", stacklevel=2)
    return report
