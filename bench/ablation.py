"""`boxseg bench ablation`: train presets over seeds on the synthetic bench split; mean ± std of mask AP.

For every (preset, seed): train with the preset's config (seed = ``runtime.seed``; ``--iters`` shortens the
schedule, scaling its steps and warm-ups by the same factor), evaluate the student on the val split, and write
``OUT/runs/<preset>/seed<k>/result.json``. A run whose result file exists is not trained again, and an interrupted
run resumes from its last checkpoint, so the whole command is resumable. The box-fill and ellipse baselines are
evaluated on the same val split and listed beside the presets.

Reports (via :func:`boxseg.bench.report.write_report`): ``ablation.{json,csv,md,png}`` (one row per preset:
mean ± sample std over seeds of segm AP, AP50, AP75, APs, APm, APl, plus box AP) and ``ablation_runs.*`` (one row
per run).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import click

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DEFAULT_PRESETS = "boxinst,boxteacher,boxseg,condinst"
KEYS = ["preset"]
PLOT = {"kind": "bar", "x": "preset", "y": ["AP_mean", "AP50_mean", "AP75_mean"],
        "title": "mask AP on the synthetic bench split (mean over seeds)", "ylabel": "mask AP (%)"}


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value) of the non-None values; (None, None) if none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.1f} ± {std or 0.0:.1f}"


def aggregate(preset: str, results: list[dict[str, Any]], kind: str = "trained") -> dict[str, Any]:
    """One flat row: ``<metric>`` as "mean ± std" text (Markdown) and ``<metric>_mean``/``_std`` numbers."""
    row: dict[str, Any] = {"preset": preset, "kind": kind, "runs": len(results)}
    for m in METRICS:
        mean, std = mean_std([r["segm"].get(m) for r in results])
        row[m] = pm(mean, std)
        row[f"{m}_mean"], row[f"{m}_std"] = mean, std
    mean, std = mean_std([r["bbox"].get("AP") for r in results])
    row["box_AP"], row["box_AP_mean"], row["box_AP_std"] = pm(mean, std), mean, std
    return row


def ensure_data(data: Path | None, out: Path, split: str, log: Any) -> Path:
    """``--data`` as given, or the bench split generated once under ``OUT/data_<split>`` (reused afterwards)."""
    if data is not None:
        for sub in ("train", "val"):
            if not (data / sub / "annotations.json").is_file():
                raise click.UsageError(f"--data {data}: expected {data / sub / 'annotations.json'} (a bench split "
                                       "as written by `boxseg data synth --preset bench`)")
        return data
    root = out / f"data_{split}"
    if all((root / sub / "annotations.json").is_file() for sub in ("train", "val")):
        log(f"bench ablation: reusing the {split} bench split in {root}")
        return root
    from boxseg.data.synth import generate_bench

    log(f"bench ablation: writing the {split} bench split to {root}")
    generate_bench(root, split=split)
    return root


def data_split(data: Path) -> str | None:
    """The synthetic split (easy / hard) recorded in a bench split's val annotations, or None (e.g. real data)."""
    try:
        info = json.loads((data / "val" / "annotations.json").read_text()).get("info") or {}
    except (OSError, ValueError):
        return None
    return info.get("split") if isinstance(info, dict) else None


def run_config(preset: str, config: str | None, seed: int, data: Path, run_dir: Path, iters: int | None,
               device: str, threads: int, overrides: list[str]) -> Any:
    from boxseg.train.config import apply_override, load_config
    from boxseg.train.schedule import scale_schedule

    cfg = load_config(preset, config, overrides=[
        f"data.train_dir={json.dumps(str(data / 'train'))}", f"runtime.out_dir={json.dumps(str(run_dir))}",
        f"runtime.seed={seed}", f"runtime.device={device}", f"runtime.threads={threads}", "runtime.eval_every=0",
    ])
    if iters is not None:
        cfg = scale_schedule(cfg, iters)
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


def config_fingerprint(cfg: Any) -> str:
    """A short hash of everything that defines a run except where it writes (a reused result must match it)."""
    import hashlib

    from boxseg.train.config import config_to_dict

    plain = config_to_dict(cfg)
    plain["runtime"].pop("out_dir", None)
    plain["runtime"].pop("progress", None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def train_and_evaluate(preset: str, config: str | None, seed: int, data: Path, out: Path, iters: int | None,
                       device: str, threads: int, overrides: list[str], log: Any) -> dict[str, Any]:
    """One run, or its saved result when ``result.json`` exists."""
    run_dir = out / "runs" / preset / f"seed{seed}"
    result_path = run_dir / "result.json"
    cfg = run_config(preset, config, seed, data, run_dir, iters, device, threads, overrides)
    fingerprint = config_fingerprint(cfg)
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved.get("config_fingerprint") != fingerprint:
            raise click.UsageError(f"{result_path} was made with another configuration (different --iters, "
                                   "--config, data or overrides); use another --out, or delete that run folder")
        log(f"bench ablation: {preset} seed {seed}: done before, reading {result_path}")
        return saved
    from boxseg.bench.report import write_text_atomic
    from boxseg.train.evaluate import evaluate_checkpoint
    from boxseg.train.loop import Trainer

    log(f"bench ablation: {preset} seed {seed}: training {cfg.solver.max_iter} iterations in {run_dir}")
    t0 = time.perf_counter()
    summary = Trainer(cfg, resume=True).train()
    train_s = time.perf_counter() - t0
    metrics = evaluate_checkpoint(summary["checkpoint"], data / "val", device=device)
    result = {"preset": preset, "seed": seed, "iterations": cfg.solver.max_iter, "train_seconds": train_s,
              "config_fingerprint": fingerprint,
              "checkpoint": summary["checkpoint"], "segm": metrics["segm"], "bbox": metrics["bbox"]}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(result_path, json.dumps(result, indent=2) + "\n")
    log(f"  mask AP {metrics['segm']['AP']:.2f}, box AP {metrics['bbox']['AP']:.2f}")
    return result


def baseline_metrics(data: Path) -> dict[str, dict[str, Any]]:
    from boxseg.eval.baselines import BASELINES, baseline_results
    from boxseg.eval.coco_eval import evaluate

    gt = data / "val" / "annotations.json"
    return {kind: evaluate(gt, baseline_results(gt, kind)) for kind in BASELINES}


def run_ablation(presets: list[str], config: str | None, seeds: int, iters: int | None, data: Path, out: Path,
                 device: str, threads: int, overrides: list[str], log: Any = None) -> tuple[list[dict], list[dict]]:
    """(rows per preset and baseline, rows per run)."""
    say = log or (lambda msg: click.echo(msg, err=True))
    per_preset: dict[str, list[dict[str, Any]]] = {}
    for preset in presets:
        for seed in range(seeds):
            per_preset.setdefault(preset, []).append(
                train_and_evaluate(preset, config, seed, data, out, iters, device, threads, overrides, say))
    rows = [aggregate(p, res) for p, res in per_preset.items()]
    rows += [aggregate(f"{kind} baseline", [m], kind="baseline") for kind, m in baseline_metrics(data).items()]
    runs = [{"preset": r["preset"], "seed": r["seed"], "iterations": r["iterations"],
             "train_seconds": r.get("train_seconds"), **{m: r["segm"].get(m) for m in METRICS},
             "box_AP": r["bbox"].get("AP")} for res in per_preset.values() for r in res]
    return rows, runs


def parse_presets(text: str) -> list[str]:
    from boxseg.train.config import ConfigError, preset_path

    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise click.BadParameter("no preset given", param_hint="--presets")
    for name in names:
        try:
            preset_path(name)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--presets") from exc
    return names


def check_config(presets: list[str], overlay: str | None, overrides: list[str]) -> None:
    """Fail before any training on a bad overlay or override (for every preset)."""
    from boxseg.train.config import ConfigError, load_config

    from boxseg.cli import check_overrides

    check_overrides(overrides)
    for preset in presets:
        try:
            load_config(preset, overlay, overrides)
        except ConfigError as exc:
            raise click.UsageError(f"preset {preset}: {exc}") from exc


@click.command("ablation", help="Train presets over seeds on the synthetic bench split; AP table and chart.")
@click.option("--presets", "presets_text", default=DEFAULT_PRESETS, show_default=True,
              help="Comma-separated training presets.")
@click.option("--config", "config", default="synthetic_cpu", show_default=True,
              help="Config overlay (YAML file or shipped name) applied over every preset; 'none' for the bare "
                   "presets (their COCO recipe).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1 per preset.")
@click.option("--iters", default=None, type=click.IntRange(min=1),
              help="Training iterations per run (the preset's schedule scaled to it) [default: the preset's].")
@click.option("--split", type=click.Choice(["easy", "hard"]), default="easy", show_default=True,
              help="Which bench split to generate (ignored with --data).")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="An existing bench split (DIR/train, DIR/val) instead of generating one.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch intra-op threads; 0 = torch's default.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report) instead of the table.")
@click.option("--out", "out_dir", default="runs/bench/ablation", show_default=True,
              type=click.Path(file_okay=False), help="Folder for runs, the cached split and the reports.")
@click.argument("overrides", nargs=-1)
def cli(presets_text: str, config: str, seeds: int, iters: int | None, split: str, data_dir: str | None,
        device: str, threads: int, as_json: bool, out_dir: str, overrides: tuple[str, ...]) -> None:
    """Extra arguments are training-config overrides (key=value) applied to every run."""
    from boxseg.bench.report import write_report

    presets = parse_presets(presets_text)
    overlay = None if config.lower() == "none" else config
    check_config(presets, overlay, list(overrides))
    out = Path(out_dir)
    say = (lambda msg: click.echo(msg, err=True))
    data = ensure_data(Path(data_dir) if data_dir else None, out, split, say)
    rows, runs = run_ablation(presets, overlay, seeds, iters, data, out, device, threads, list(overrides), say)
    meta = {"presets": presets, "config": overlay, "seeds": seeds, "iters": iters,
            "split": data_split(data) if data_dir else split,
            "data": str(data), "device": device, "threads": threads, "overrides": list(overrides), "keys": KEYS,
            "metric": "COCO mask AP (%) on the val split; mean ± sample std over seeds"}
    columns = ["preset", "runs", *METRICS, "box_AP"]
    headers = {"preset": "Preset", "runs": "Runs", "box_AP": "box AP"}
    table = write_report("ablation", rows, out, meta, PLOT, summary={"runs": runs}, columns=columns,
                         headers=headers)
    write_report("ablation_runs", runs, out, meta, {"kind": "bar", "x": ["preset", "seed"], "y": "AP",
                                                      "title": "mask AP per run", "ylabel": "mask AP (%)"})
    if as_json:
        click.echo(json.dumps(json.loads((out / "ablation.json").read_text()), allow_nan=False))
        return
    click.echo(table)
    click.echo(f"wrote {out / 'ablation'}.{{json,csv,md,png}} and {out / 'ablation_runs'}.*", file=sys.stdout)
