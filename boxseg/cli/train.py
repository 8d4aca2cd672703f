"""`boxseg train`: train a preset on a COCO-format dataset folder.

Multi-GPU / multi-process: ``torchrun --nproc_per_node N --no-python boxseg train ...`` (gloo on CPU, nccl on
CUDA); ``--batch`` is the global batch, split evenly over the processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from boxseg.cli import COMMANDS, check_overrides

EPILOG = """\b
Extra arguments are config overrides, key=value with a YAML value:
  boxseg train --preset boxinst --data D --out RUN solver.lr=0.02 input.train_scales=[256,320]
Precedence: preset < --config < the flags above < key=value. Writes RUN/config.yaml (resolved),
RUN/metrics.jsonl and RUN/checkpoints/last.pt. A RUN that already has a checkpoint needs
--resume (continue it) or --overwrite (replace it).
Several processes (gloo on CPU, nccl on CUDA):
  torchrun --nproc_per_node 2 --no-python boxseg train ... (--batch is the global batch)"""


@click.command("train", help=COMMANDS["train"], epilog=EPILOG)
@click.option("--preset", default=None, help="Preset name (configs/<preset>.yaml), e.g. boxinst or condinst.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A YAML file applied over the preset.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Training dataset folder (DIR/annotations.json + DIR/images/).")
@click.option("--val-data", "val_dir", type=click.Path(file_okay=False), default=None,
              help="Validation dataset folder (periodic and final evaluation).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Run folder.")
@click.option("--iters", type=int, default=None, help="solver.max_iter")
@click.option("--batch", type=int, default=None, help="solver.ims_per_batch (global, all processes)")
@click.option("--device", default=None, help="cpu | cuda | cuda:N")
@click.option("--workers", type=int, default=None, help="DataLoader workers (default: 0 on CPU, 2 on CUDA)")
@click.option("--resume", is_flag=True, help="Continue from RUN/checkpoints/last.pt (config from RUN/config.yaml "
              "when --preset is not given).")
@click.option("--overwrite", is_flag=True, help="Start a new run in a RUN folder that already has a checkpoint, "
              "replacing its checkpoints, config.yaml and metrics.jsonl.")
@click.option("--allow-outside-images", is_flag=True,
              help="Let image file_names be absolute or climb out of the image folder with '..'.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
@click.argument("overrides", nargs=-1)
def cli(preset: str | None, config_path: str | None, data_dir: str | None, val_dir: str | None, out_dir: str,
        iters: int | None, batch: int | None, device: str | None, workers: int | None, resume: bool,
        overwrite: bool, allow_outside_images: bool, as_json: bool, overrides: tuple[str, ...]) -> None:
    from boxseg.data.errors import DataError
    from boxseg.train.checkpoint import CheckpointError
    from boxseg.train.config import ConfigError
    from boxseg.train.loop import Trainer, TrainingDiverged
    from boxseg.train.run_dir import RunDirError, prepare_run_dir

    flags = {
        "data.train_dir": data_dir, "data.val_dir": val_dir, "runtime.out_dir": out_dir,
        "solver.max_iter": iters, "solver.ims_per_batch": batch, "runtime.device": device,
        "data.workers": workers,
    }
    check_overrides(overrides)
    try:
        cfg = _resolve_config(preset, config_path, out_dir, resume,
                              {k: v for k, v in flags.items() if v is not None}, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        # After the config is known good, before anything in the folder is written (the trainer rewrites
        # config.yaml and empties metrics.jsonl as it starts).
        state = prepare_run_dir(out_dir, resume=resume, overwrite=overwrite)
    except RunDirError as exc:
        raise click.UsageError(str(exc)) from exc
    for p in state.removed_temp_files:
        click.echo(f"boxseg train: removed {p}, left by an interrupted checkpoint save", err=True)
    if state.removed_checkpoints:
        click.echo(f"boxseg train: --overwrite removed {', '.join(map(str, state.removed_checkpoints))}", err=True)
    try:
        trainer = Trainer(cfg, resume=resume)
        with _outside_images(allow_outside_images):
            summary = trainer.train()
    except (ConfigError, CheckpointError, DataError, TrainingDiverged) as exc:
        raise click.ClickException(str(exc)) from exc
    summary = {**summary, **_dataset_reports(trainer)}

    from boxseg.train.distributed import launched_by_torchrun

    if launched_by_torchrun() and _rank() != 0:
        return
    if as_json:
        click.echo(json.dumps(summary))
        return
    _print_summary(summary)


def _resolve_config(preset: str | None, config_path: str | None, out_dir: str, resume: bool,
                    flags: dict[str, Any], overrides: tuple[str, ...]) -> Any:
    """The preset (or, resuming without --preset, RUN/config.yaml), --config, the flags, then key=value."""
    from boxseg.train.config import (
        apply_override,
        config_file,
        config_from_dict,
        load_config,
        merge_dict,
        read_yaml,
        with_overrides,
    )

    saved = Path(out_dir) / "config.yaml"
    if preset is None and resume and saved.is_file():
        cfg = config_from_dict(read_yaml(saved), source=str(saved))
        if config_path:
            path = config_file(config_path)
            cfg = merge_dict(cfg, read_yaml(path), source=str(path))
    elif preset is None:
        raise click.UsageError("--preset is required (e.g. --preset boxinst), except with --resume on a run "
                               "folder that has config.yaml")
    else:
        cfg = load_config(preset, config_path)
    cfg = with_overrides(cfg, flags, source="the command-line flags")
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


@contextlib.contextmanager
def _outside_images(allow: bool) -> Iterator[None]:
    """--allow-outside-images reaches the trainer's dataset reader (and DataLoader workers) via the environment."""
    from boxseg.data.coco import ALLOW_OUTSIDE_ENV

    if not allow:
        yield
        return
    before = os.environ.get(ALLOW_OUTSIDE_ENV)
    os.environ[ALLOW_OUTSIDE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_OUTSIDE_ENV, None)
        else:
            os.environ[ALLOW_OUTSIDE_ENV] = before


def _dataset_reports(trainer: Any) -> dict[str, Any]:
    """The readers' reports (boxes used, clipped, dropped; images without boxes) for the summary and --json."""
    out: dict[str, Any] = {}
    for key, attr in (("dataset", "train_set"), ("val_dataset", "val_set")):
        ds = getattr(trainer, attr, None)
        if ds is not None and isinstance(getattr(ds, "report", None), dict):
            out[key] = {"path": str(ds.ann_file), **ds.report}
    return out


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _print_summary(s: dict) -> None:
    from boxseg.data.coco import format_report

    out = sys.stdout
    print(f"trained iterations {s['start_iteration']} -> {s['iterations']}", file=out)
    print(f"  checkpoint: {s['checkpoint']}", file=out)
    print(f"  config:     {s['config']}", file=out)
    print(f"  metrics:    {s['metrics']}", file=out)
    if s["final_losses"]:
        terms = ", ".join(f"{k} {v:.4f}" for k, v in s["final_losses"].items())
        print(f"  final losses: {terms}", file=out)
    for key, title in (("dataset", "train data"), ("val_dataset", "val data")):
        r = s.get(key)
        if r:
            print(f"  {title}: {format_report(r)}", file=out)
    if s.get("eval"):
        e = s["eval"]
        print(f"  eval: segm AP {e['segm']['AP']:.2f} (AP50 {e['segm']['AP50']:.2f}), "
              f"bbox AP {e['bbox']['AP']:.2f}", file=out)

