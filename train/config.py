"""Training configuration: dataclasses, YAML presets and ``a.b.c=value`` overrides.

One config system: every section is a dataclass, a preset is a YAML file holding a partial dict over the
dataclass defaults (``configs/<preset>.yaml``, which names its ``method``), an overlay is a YAML without a
``method`` applied over a preset (``--config``; ``configs/synthetic_cpu.yaml`` sizes any preset for the synthetic
data on a small CPU), and command-line overrides are applied last. The dataclass defaults and the presets hold the
COCO recipe (docs/method.md "COCO recipe"). Values are type-checked against the dataclass field annotations, so a
typo or a wrong type fails before training starts.

Code that builds a run config sets Python values with :func:`with_overrides` (type-checked the same way); only the
user's command-line ``key=value`` strings are parsed (:func:`apply_override`). The type checks, choice fields
(``Literal``) and the dict round trip are the shared machinery of :mod:`boxseg.config`.

The engine never branches on the preset name; it reads ``method`` and the section values. New sections (the
teacher-student keys) are added as new dataclass fields of :class:`TrainConfig`; loading, overrides, type checks
and ``config_to_dict``/``config_from_dict`` need no other change.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from boxseg.train.losses.config import LossConfig
from boxseg.train.pseudo.config import (
    BPMAConfig,
    PCConfig,
    QAMConfig,
    SIMConfig,
    StudentAugConfig,
    TeacherConfig,
)

from boxseg.config import ConfigError, check_choices, check_value, config_to_dict, merge_dict
from boxseg.model.config import ModelConfig
from boxseg.tempfiles import write_atomic

__all__ = ["ConfigError", "DataConfig", "InputConfig", "RuntimeConfig", "SolverConfig", "TrainConfig",
           "apply_override", "available_overlays", "available_presets", "check_value", "config_dirs",
           "config_file", "config_from_dict", "config_to_dict", "load_config", "merge_dict", "preset_path",
           "read_yaml", "reads_gt_masks", "save_config", "with_overrides"]


@dataclass
class SolverConfig:
    """SGD with linear warm-up and step decay (docs/method.md "COCO recipe"). Defaults are the COCO 3x schedule."""

    optimizer: Literal["sgd"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Detectron2 convention: no weight decay on normalisation layers' affine parameters.
    weight_decay_norm: float = 0.0
    ims_per_batch: int = 16
    max_iter: int = 270000
    steps: tuple[int, ...] = (210000, 250000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad_norm: float = 0.0  # 0 disables clipping
    amp: bool = False  # mixed precision; only used on CUDA


@dataclass
class InputConfig:
    """Geometric augmentation of the training input and the test-time size (docs/method.md "COCO recipe")."""

    train_scales: tuple[int, ...] = (640, 672, 704, 736, 768, 800)  # shorter side, one drawn per image
    train_max_size: int = 1333  # longer side cap
    hflip_prob: float = 0.5
    test_size: int = 800
    test_max_size: int = 1333
    size_divisor: int = 32  # batches are padded to a multiple of this


@dataclass
class DataConfig:
    train_dir: str = ""  # dataset folder: DIR/annotations.json + DIR/images/
    val_dir: str = ""  # empty: no periodic evaluation
    workers: int = -1  # DataLoader workers; -1 picks 0 on CPU and 2 on CUDA


@dataclass
class RuntimeConfig:
    device: str = "cpu"  # cpu | cuda | cuda:N
    seed: int = 0
    out_dir: str = ""
    checkpoint_every: int = 1000  # 0: only at the end
    eval_every: int = 0  # 0: only at the end (when val_dir is set)
    log_every: int = 20
    tensorboard: bool = False
    progress: bool = True
    eval_batch_size: int = 4
    eval_score_thr: float = 0.05
    # torch intra-op CPU threads; 0 keeps torch's default. 1 is much faster for small models on a busy machine.
    threads: int = 0
    # Teacher-student runs on data with GT masks (the synthetic data) log the pseudo masks' IoU with them. A
    # diagnostic only: the masks are dropped from the batch before any loss.
    telemetry_gt_masks: bool = True


@dataclass
class TrainConfig:
    method: str = "supervised"  # the training method (see boxseg.train.loop.METHODS)
    preset: str = ""  # informative: which preset this config came from
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    input: InputConfig = field(default_factory=InputConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    # Teacher-student sections (docs/method.md "Configuration keys"); read only by the teacher-student methods.
    # "none": no teacher (the supervised presets); the teacher-student method needs "qam", "bpma" or "sim".
    pseudo_labeler: Literal["qam", "bpma", "sim", "none"] = "qam"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentAugConfig = field(default_factory=StudentAugConfig)
    qam: QAMConfig = field(default_factory=QAMConfig)
    bpma: BPMAConfig = field(default_factory=BPMAConfig)
    sim: SIMConfig = field(default_factory=SIMConfig)
    pc: PCConfig = field(default_factory=PCConfig)

    def __post_init__(self) -> None:
        check_choices(self, "config key ")


def reads_gt_masks(cfg: TrainConfig) -> bool:
    """Only the mask-supervised upper bound (loss.mask_loss='condinst') reads GT masks; box presets never do."""
    return cfg.loss.mask_loss == "condinst"


# --------------------------------------------------------------------------------------------------------------
# Preset and overlay discovery


def config_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, first match wins: $BOXSEG_CONFIG_DIR, then the shipped ``configs/``.

    The shipped folder is ``boxseg/configs`` in an installed wheel (the wheel maps the repository's ``configs/``
    there) and the repository's ``configs/`` in an editable install; both are ``<this file>/../../configs`` seen
    from the ``boxseg.train`` package folder (``boxseg/train`` installed, ``train/`` in the checkout).
    """
    dirs = []
    if os.environ.get("BOXSEG_CONFIG_DIR"):
        dirs.append(Path(os.environ["BOXSEG_CONFIG_DIR"]))
    dirs.append(Path(__file__).resolve().parent.parent / "configs")
    return [d for d in dirs if d.is_dir()]


def _config_files() -> dict[str, Path]:
    """name -> file of every shipped/user config YAML (first folder wins)."""
    files: dict[str, Path] = {}
    for d in config_dirs():
        for p in sorted(d.glob("*.yaml")):
            files.setdefault(p.stem, p)
    return files


def is_preset_file(path: Path) -> bool:
    """A preset names its training ``method``; a YAML without one is an overlay (applied with ``--config`` over a
    preset, e.g. ``synthetic_cpu``)."""
    try:
        return "method" in read_yaml(path)
    except ConfigError:
        return True  # a broken preset should fail loudly when loaded, not vanish from the list


def available_presets() -> list[str]:
    return sorted(name for name, p in _config_files().items() if is_preset_file(p))


def available_overlays() -> list[str]:
    return sorted(name for name, p in _config_files().items() if not is_preset_file(p))


def preset_path(preset: str) -> Path:
    files = _config_files()
    if preset in files:
        if not is_preset_file(files[preset]):
            raise ConfigError(f"'{preset}' ({files[preset]}) is a config overlay, not a preset (it sets no "
                              f"'method'): apply it over a preset, e.g. --preset boxinst --config {preset}")
        return files[preset]
    names = available_presets()
    close = difflib.get_close_matches(preset, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown preset '{preset}' (available: {', '.join(names) or 'none found'}){hint}")


def config_file(name_or_path: str | Path) -> Path:
    """A YAML applied over a preset: an existing file, or the name of a shipped one (``synthetic_cpu``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    files = _config_files()
    if "/" not in text and os.sep not in text:
        stem = text.removesuffix(".yaml")
        if stem in files:
            return files[stem]
    overlays = available_overlays()
    close = difflib.get_close_matches(text, list(files), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"config file '{text}': no such file, and no shipped config of that name (overlays: "
                      f"{', '.join(overlays) or 'none found'}){hint}")


# --------------------------------------------------------------------------------------------------------------
# Loading


def load_config(preset: str | None = None, yaml_path: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults, then the preset YAML, then ``yaml_path`` (a file or a shipped overlay's name, e.g.
    ``synthetic_cpu``), then the user's ``key=value`` overrides (later wins). Code that sets values itself uses
    :func:`with_overrides` on the result."""
    cfg = TrainConfig()
    if preset:
        path = preset_path(preset)
        cfg = merge_dict(cfg, read_yaml(path), source=str(path))
        cfg.preset = preset
    if yaml_path is not None:
        path = config_file(yaml_path)
        cfg = merge_dict(cfg, read_yaml(path), source=str(path))
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


def with_overrides(cfg: TrainConfig, values: Mapping[str, Any], source: str = "overrides") -> TrainConfig:
    """A copy of ``cfg`` with ``{"a.b.c": value}`` applied, values given as Python values and checked against the
    field annotations like a YAML file's (``{"solver.max_iter": 800, "input.train_scales": [160, 192]}``)."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: key '{key}' is inside '{part}', which is given a value too")
        if leaf in node:
            raise ConfigError(f"{source}: key '{key}' is given twice")
        node[leaf] = value
    return merge_dict(cfg, nested, source=source)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_override(cfg: TrainConfig, item: str) -> TrainConfig:
    """Apply one user ``a.b.c=value`` override; the value is parsed as YAML (``[1, 2]``, ``true``, ``0.5``...)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected key=value, e.g. solver.lr=0.02")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML: {exc}") from exc
    return with_overrides(cfg, {key: value}, source=f"override '{item}'")


def config_from_dict(data: dict[str, Any], source: str = "config dict") -> TrainConfig:
    """Inverse of :func:`config_to_dict`, with the same key and type checks as YAML files."""
    return merge_dict(TrainConfig(), data, source=source)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
