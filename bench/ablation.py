"""`boxseg bench ablation`: train presets over seeds on the synthetic bench split; mean ± std of mask AP, the
paired per-seed difference to a reference preset (BoxInst) with its 95% confidence interval, and telemetry curves.

The default is the converged CPU protocol (docs/method.md "CPU protocol"): the ``synthetic_cpu`` overlay (800
iterations at batch 4, evaluation every 200) on the bench split generated at 192 x 192. For every (preset, seed):
train with the preset's config (seed = ``runtime.seed``; ``--iters`` shortens the schedule, scaling its steps and
warm-ups by the same factor) with periodic evaluation of the student (and the EMA teacher) on the val split, and
write ``OUT/runs/<preset>/seed<k>/result.json`` (final AP, the evaluation curve, the telemetry). A run counts as
converged when its last two evaluations differ by < 1 mask AP. A run whose result file exists is not trained
again, and an interrupted run resumes from its last checkpoint, so the whole command is resumable. The box-fill and
ellipse baselines are evaluated on the same val split and listed beside the presets.

Reports (via :func:`boxseg.bench.report.write_report`): ``ablation.{json,csv,md,png}`` (one row per preset:
mean ± sample std over seeds of segm AP, AP50, AP75, APs, APm, APl and box AP, the paired difference to the
reference preset, converged runs), ``ablation_runs.*`` (one row per run) and ``ablation_telemetry.*`` (pseudo-mask
validity, their IoU with the GT masks and quality over iterations, mean over seeds, for the teacher-student presets).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import click

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DEFAULT_PRESETS = "boxinst,boxteacher,boxseg,condinst"
DEFAULT_SIZE = 192  # the protocol's image size (the synthetic_cpu overlay's input sizes match it)
REFERENCE = "boxinst"  # paired differences are taken against this preset when it is in the run
CONVERGED_AP = 1.0  # |AP(last eval) - AP(the one before)| below this: the run has converged
TELEMETRY_KEYS = ("pseudo_valid_frac", "pseudo_iou", "w_mean", "teacher_score_p50", "bank_size", "pastes_per_image")
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard table values; scipy, which would
# compute them, is not a dependency of the package). Above 30 the normal quantile 1.96 is within 2%.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# Rows that are two steps: label the train split with one preset's checkpoint of the same seed (`boxseg label`),
# then train another preset on those labels with the same protocol (issue: masks for your boxes, BoxCaseg-style).
DERIVED = {"label+condinst": ("boxseg", "condinst")}
# A row may also be a preset with its own overrides, "boxseg[qam.gate=soft;qam.soft_gate_power=2]": the same protocol
# with those keys changed (BoxSeg + PAIS's soft gate, BoxSeg + w^4, ...). Its runs live under a folder of that name.
VARIANT = re.compile(r"^([A-Za-z0-9_]+)\[([^\]]*)\]$")
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


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Mean of the per-seed differences values[s] - reference[s] over the seeds both have, with the 95% t interval.
    -> {"n", "mean", "lo", "hi"} (lo/hi None for fewer than two pairs)."""
    diffs = [values[s] - reference[s] for s in sorted(values) if s in reference
             and values[s] is not None and reference[s] is not None]
    if not diffs:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"n": 1, "mean": mean, "lo": None, "hi": None}
    df = len(diffs) - 1
    half = (T975[df - 1] if df <= len(T975) else 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"n": len(diffs), "mean": mean, "lo": mean - half, "hi": mean + half}


def format_difference(d: dict[str, Any]) -> str:
    if d["mean"] is None:
        return "-"
    if d["lo"] is None:
        return f"{d['mean']:+.1f}"
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def aggregate(preset: str, results: list[dict[str, Any]], kind: str = "trained") -> dict[str, Any]:
    """One flat row: ``<metric>`` as "mean ± std" text (Markdown) and ``<metric>_mean``/``_std`` numbers."""
    row: dict[str, Any] = {"preset": preset, "kind": kind, "runs": len(results)}
    for m in METRICS:
        mean, std = mean_std([r["segm"].get(m) for r in results])
        row[m] = pm(mean, std)
        row[f"{m}_mean"], row[f"{m}_std"] = mean, std
    mean, std = mean_std([r["bbox"].get("AP") for r in results])
    row["box_AP"], row["box_AP_mean"], row["box_AP_std"] = pm(mean, std), mean, std
    if kind == "trained":
        flags = [r.get("converged") for r in results]
        known = [f for f in flags if f is not None]
        row["converged"] = f"{sum(known)}/{len(results)}" if known else "-"
        teacher = [r["teacher_AP"] for r in results if r.get("teacher_AP") is not None]
        if teacher:
            mean, std = mean_std(teacher)
            row["teacher_AP"], row["teacher_AP_mean"] = pm(mean, std), mean
    return row


def ap_by_seed(results: list[dict[str, Any]]) -> dict[int, float]:
    """Mask AP of each run, by seed: what paired differences pair."""
    return {r["seed"]: r["segm"].get("AP") for r in results}


def add_paired_differences(rows: list[dict[str, Any]], per_preset: dict[str, list[dict[str, Any]]],
                           reference: str = REFERENCE) -> None:
    """Add ``diff`` ("+1.2 [-0.3, +2.7]") and ``diff_mean/_lo/_hi`` (mask AP minus the reference preset's, paired
    by seed) to each trained row, when the reference preset was run."""
    if reference not in per_preset:
        return
    ref = ap_by_seed(per_preset[reference])
    for row in rows:
        if row.get("kind") != "trained" or row["preset"] not in per_preset:
            continue
        if row["preset"] == reference:
            row["diff"] = "(reference)"
            continue
        d = paired_difference(ap_by_seed(per_preset[row["preset"]]), ref)
        row["diff"] = format_difference(d)
        row["diff_mean"], row["diff_lo"], row["diff_hi"], row["diff_pairs"] = d["mean"], d["lo"], d["hi"], d["n"]


def add_variant_differences(rows: list[dict[str, Any]], per_preset: dict[str, list[dict[str, Any]]]) -> None:
    """Add ``diff_base`` (and ``diff_base_mean/_lo/_hi``) to each variant row (``boxseg[qam.gate=soft]``): its mask
    AP minus its base preset's, paired by seed, when the base preset was run. Other rows get no such key, so a
    report without variants has no such column (tables show a missing value as "-")."""
    for row in rows:
        base, own = split_variant(row["preset"])
        if row.get("kind") != "trained" or not own or base not in per_preset:
            continue
        d = paired_difference(ap_by_seed(per_preset[row["preset"]]), ap_by_seed(per_preset[base]))
        row["diff_base"] = format_difference(d)
        row["diff_base_mean"], row["diff_base_lo"], row["diff_base_hi"] = d["mean"], d["lo"], d["hi"]


def ensure_data(data: Path | None, out: Path, split: str, log: Any, size: int = DEFAULT_SIZE) -> Path:
    """``--data`` as given, or the bench split generated once under ``OUT/data_<split>_<size>`` (reused)."""
    if data is not None:
        for sub in ("train", "val"):
            if not (data / sub / "annotations.json").is_file():
                raise click.UsageError(f"--data {data}: expected {data / sub / 'annotations.json'} (a bench split "
                                       "as written by `boxseg data synth --preset bench`)")
        return data
    root = out / f"data_{split}_{size}"
    if all((root / sub / "annotations.json").is_file() for sub in ("train", "val")):
        log(f"bench ablation: reusing the {split} bench split in {root}")
        return root
    from boxseg.data.synth import generate_bench

    log(f"bench ablation: writing the {split} bench split ({size} x {size}) to {root}")
    generate_bench(root, split=split, size=(size, size))
    return root


def data_split(data: Path) -> str | None:
    """The synthetic split (easy / hard) recorded in a bench split's val annotations, or None (e.g. real data)."""
    try:
        info = json.loads((data / "val" / "annotations.json").read_text()).get("info") or {}
    except (OSError, ValueError):
        return None
    return info.get("split") if isinstance(info, dict) else None


def run_config(preset: str, config: str | None, seed: int, data: Path, run_dir: Path, iters: int | None,
               device: str, threads: int, overrides: list[str], train_dir: Path | None = None) -> Any:
    from boxseg.train.config import apply_override, load_config, with_overrides
    from boxseg.train.schedule import scale_schedule

    cfg = with_overrides(load_config(preset, config), {
        "data.train_dir": str(train_dir or data / "train"), "data.val_dir": str(data / "val"),
        "runtime.out_dir": str(run_dir), "runtime.seed": seed, "runtime.device": device, "runtime.threads": threads,
        "runtime.progress": False,
    }, source="bench ablation's run settings")
    if iters is not None:
        cfg = scale_schedule(cfg, iters)
        cfg.runtime.eval_every = max(1, iters // 4)
    elif cfg.runtime.eval_every <= 0:
        cfg.runtime.eval_every = max(1, cfg.solver.max_iter // 4)
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
                       device: str, threads: int, overrides: list[str], log: Any, train_dir: Path | None = None,
                       name: str | None = None) -> dict[str, Any]:
    """One run, or its saved result when ``result.json`` exists. ``train_dir`` replaces the split's train folder
    and ``name`` the row (and run folder) name, for derived rows."""
    run_dir = out / "runs" / run_folder(name or preset) / f"seed{seed}"
    result_path = run_dir / "result.json"
    cfg = run_config(preset, config, seed, data, run_dir, iters, device, threads, overrides, train_dir)
    fingerprint = config_fingerprint(cfg)
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved.get("config_fingerprint") != fingerprint:
            raise click.UsageError(f"{result_path} was made with another configuration (different --iters, "
                                   "--config, data or overrides); use another --out, or delete that run folder")
        log(f"bench ablation: {preset} seed {seed}: done before, reading {result_path}")
        return saved
    from boxseg.train.loop import Trainer

    from boxseg.eval.predict import evaluate_checkpoint
    from boxseg.tempfiles import write_atomic

    log(f"bench ablation: {preset} seed {seed}: training {cfg.solver.max_iter} iterations in {run_dir}")
    t0 = time.perf_counter()
    summary = Trainer(cfg, resume=True).train()
    train_s = time.perf_counter() - t0
    evals, telemetry = read_metrics(run_dir / "metrics.jsonl")
    final = evals[-1] if evals and evals[-1]["iteration"] == cfg.solver.max_iter else None
    if final is None:  # e.g. resumed a finished run without its evaluation line
        metrics = evaluate_checkpoint(summary["checkpoint"], data / "val", device=device)
        segm, bbox, teacher_ap = metrics["segm"], metrics["bbox"], None
    else:
        segm, bbox, teacher_ap = final["segm"], final["bbox"], final.get("teacher_AP")
    aps = [e["segm"]["AP"] for e in evals]
    result = {"preset": name or preset, "seed": seed, "iterations": cfg.solver.max_iter, "train_seconds": train_s,
              "config_fingerprint": fingerprint, "checkpoint": summary["checkpoint"], "segm": segm, "bbox": bbox,
              "teacher_AP": teacher_ap,
              "converged": abs(aps[-1] - aps[-2]) < CONVERGED_AP if len(aps) >= 2 else None,
              "evals": [{"iteration": e["iteration"], "AP": e["segm"]["AP"], "box_AP": e["bbox"]["AP"],
                         "teacher_AP": e.get("teacher_AP")} for e in evals],
              "telemetry": telemetry}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(result_path, json.dumps(result, indent=2) + "\n")
    log(f"  mask AP {segm['AP']:.2f}, box AP {bbox['AP']:.2f}"
        + (f", teacher mask AP {teacher_ap:.2f}" if teacher_ap is not None else "")
        + (f", converged: {result['converged']}" if result["converged"] is not None else ""))
    return result


def label_split(checkpoint: Path, split: Path, out: Path, device: str, log: Any) -> Path:
    """`boxseg label` of a split with a checkpoint (QAM through its EMA teacher), reused when already written."""
    if (out / "annotations.json").is_file():
        log(f"bench ablation: reusing the labels in {out}")
        return out
    from boxseg.train.label import LabelOptions, label_dataset

    log(f"bench ablation: labelling {split} with {checkpoint} into {out}")
    summary = label_dataset(split, out, checkpoint, LabelOptions(device=device), resume=True, progress=False)
    log(f"  labelled: {json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float))})}")
    return out


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(evaluations, telemetry records) of a run's metrics.jsonl, in iteration order."""
    evals, telemetry = [], []
    if not path.is_file():
        return evals, telemetry
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "eval" in rec:
            ev = rec["eval"]
            teacher = ev.get("teacher")
            evals.append({"iteration": rec["iteration"], "segm": ev["segm"], "bbox": ev["bbox"],
                          "teacher_AP": teacher["segm"]["AP"] if teacher else None})
        elif rec.get("telemetry"):
            telemetry.append({"iteration": rec["iteration"], **{k: rec["telemetry"].get(k) for k in TELEMETRY_KEYS}})
    return evals, telemetry


def telemetry_rows(per_preset: dict[str, list[dict[str, Any]]], points: int = 8) -> list[dict[str, Any]]:
    """Mean over seeds of each telemetry value, per (preset, iteration), for the presets that log telemetry; about
    ``points`` evenly spaced log windows per preset (every window stays in each run's result.json)."""
    rows = []
    for preset, results in per_preset.items():
        by_iter: dict[int, list[dict[str, Any]]] = {}
        for r in results:
            for rec in r.get("telemetry") or []:
                by_iter.setdefault(rec["iteration"], []).append(rec)
        its = sorted(by_iter)
        step = max(1, math.ceil(len(its) / points))
        for it in [i for k, i in enumerate(its) if (len(its) - 1 - k) % step == 0]:
            row: dict[str, Any] = {"preset": preset, "iteration": it}
            for key in TELEMETRY_KEYS:
                row[key] = mean_std([rec.get(key) for rec in by_iter[it]])[0]
            rows.append(row)
    return rows


def baseline_metrics(data: Path) -> dict[str, dict[str, Any]]:
    from boxseg.eval.baselines import BASELINES, baseline_results
    from boxseg.eval.coco_eval import evaluate

    gt = data / "val" / "annotations.json"
    return {kind: evaluate(gt, baseline_results(gt, kind)) for kind in BASELINES}


def run_ablation(presets: list[str], config: str | None, seeds: int, iters: int | None, data: Path, out: Path,
                 device: str, threads: int, overrides: list[str], log: Any = None
                 ) -> tuple[list[dict], list[dict], list[dict]]:
    """(rows per preset and baseline, rows per run, telemetry rows per preset and iteration)."""
    say = log or (lambda msg: click.echo(msg, err=True))
    per_preset: dict[str, list[dict[str, Any]]] = {}
    for preset in presets:
        for seed in range(seeds):
            if preset in DERIVED:
                source, target = DERIVED[preset]
                src = train_and_evaluate(source, config, seed, data, out, iters, device, threads, overrides, say)
                labels = label_split(Path(src["checkpoint"]), data / "train",
                                     out / "labels" / source / f"seed{seed}", device, say)
                result = train_and_evaluate(target, config, seed, data, out, iters, device, threads, overrides, say,
                                            train_dir=labels, name=preset)
            else:
                base, own = split_variant(preset)
                result = train_and_evaluate(base, config, seed, data, out, iters, device, threads, [*overrides, *own],
                                            say, name=preset if own else None)
            per_preset.setdefault(preset, []).append(result)
    rows = [aggregate(p, res) for p, res in per_preset.items()]
    add_paired_differences(rows, per_preset)
    add_variant_differences(rows, per_preset)
    rows += [aggregate(f"{kind} baseline", [m], kind="baseline") for kind, m in baseline_metrics(data).items()]
    runs = [{"preset": r["preset"], "seed": r["seed"], "iterations": r["iterations"],
             "train_seconds": r.get("train_seconds"), **{m: r["segm"].get(m) for m in METRICS},
             "box_AP": r["bbox"].get("AP"), "teacher_AP": r.get("teacher_AP"), "converged": r.get("converged"),
             "AP_curve": " ".join(f"{e['AP']:.1f}" for e in r.get("evals") or [])}
            for res in per_preset.values() for r in res]
    return rows, runs, telemetry_rows(per_preset)


TELEMETRY_PLOT = [
    {"kind": "line", "x": "iteration", "y": "pseudo_valid_frac", "group": "preset",
     "title": "GT boxes with a valid pseudo mask", "ylabel": "fraction", "xlabel": "iteration"},
    {"kind": "line", "x": "iteration", "y": "pseudo_iou", "group": "preset",
     "title": "pseudo-mask IoU with the GT masks", "ylabel": "mean IoU", "xlabel": "iteration"},
    {"kind": "line", "x": "iteration", "y": "w_mean", "group": "preset",
     "title": "mean quality w of valid pseudo masks", "ylabel": "w", "xlabel": "iteration"},
]


def protocol(preset: str, overlay: str | None, iters: int | None, overrides: list[str]) -> dict[str, Any]:
    """The training protocol every run shares, read from the config a run of the first preset gets (run_config;
    the paths, seed and device do not enter it), for the report."""
    base, own = split_variant(DERIVED.get(preset, (preset,))[-1])
    cfg = run_config(base, overlay, 0, Path("."), Path("."), iters, "cpu", 0, [*overrides, *own])
    return {"max_iter": cfg.solver.max_iter, "ims_per_batch": cfg.solver.ims_per_batch, "lr": cfg.solver.lr,
            "steps": list(cfg.solver.steps), "eval_every": cfg.runtime.eval_every,
            "train_scales": list(cfg.input.train_scales), "test_size": cfg.input.test_size,
            "backbone": cfg.model.backbone, "fpn_channels": cfg.model.fpn_channels,
            "student_color_jitter_p": cfg.student.color_jitter.p, "ema_momentum": cfg.teacher.ema_momentum,
            "ema_warmup": cfg.teacher.ema_warmup}


def split_variant(name: str) -> tuple[str, list[str]]:
    """A row name -> (preset, its own key=value overrides): "boxseg[a=1;b=2]" -> ("boxseg", ["a=1", "b=2"])."""
    m = VARIANT.match(name)
    if not m:
        return name, []
    return m.group(1), [kv.strip() for kv in m.group(2).split(";") if kv.strip()]


def run_folder(name: str) -> str:
    """A row name as a folder name: '[', ']', '=' and ';' become readable separators."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name.replace("[", "+").replace("]", "").replace(";", "+"))


def parse_presets(text: str) -> list[str]:
    from boxseg.train.config import ConfigError, preset_path

    # Commas inside [...] belong to a variant's overrides, not to the list.
    names = list(dict.fromkeys(p.strip() for p in re.split(r",(?![^\[]*\])", text) if p.strip()))
    if not names:
        raise click.BadParameter("no preset given", param_hint="--presets")
    for name in names:
        try:
            for part in DERIVED.get(name, (split_variant(name)[0],)):
                preset_path(part)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--presets") from exc
    return names


def check_config(presets: list[str], overlay: str | None, overrides: list[str]) -> None:
    """Fail before any training on a bad overlay or override (for every preset)."""
    from boxseg.train.config import ConfigError, load_config

    from boxseg.cli import check_overrides

    check_overrides(overrides)
    for name in presets:
        for preset in DERIVED.get(name, (name,)):
            base, own = split_variant(preset)
            try:
                check_overrides(own)
                load_config(base, overlay, [*overrides, *own])
            except (ConfigError, click.UsageError) as exc:
                raise click.UsageError(f"preset {preset}: {exc}") from exc


@click.command("ablation", help="Train presets over seeds on the synthetic bench split; AP table and chart.")
@click.option("--presets", "presets_text", default=DEFAULT_PRESETS, show_default=True,
              help="Comma-separated training presets, and label+condinst (label the train split with the boxseg "
                   "run of the same seed, then train condinst on those labels), and variants: a preset with its "
                   "own overrides, e.g. 'boxseg[qam.gate=soft;loss.mask_sup.weight_exponent=4]'.")
@click.option("--config", "config", default="synthetic_cpu", show_default=True,
              help="Config overlay (YAML file or shipped name) applied over every preset; 'none' for the bare "
                   "presets (their COCO recipe).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1 per preset.")
@click.option("--iters", default=None, type=click.IntRange(min=1),
              help="Training iterations per run (the preset's schedule scaled to it) [default: the preset's].")
@click.option("--split", type=click.Choice(["easy", "hard"]), default="easy", show_default=True,
              help="Which bench split to generate (ignored with --data).")
@click.option("--size", default=DEFAULT_SIZE, show_default=True, type=click.IntRange(min=32),
              help="Image size of the generated bench split (ignored with --data); the overlay's input sizes "
                   "should match it.")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="An existing bench split (DIR/train, DIR/val) instead of generating one.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch intra-op threads; 0 = torch's default.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report) instead of the table.")
@click.option("--out", "out_dir", default="runs/bench/ablation", show_default=True,
              type=click.Path(file_okay=False), help="Folder for runs, the cached split and the reports.")
@click.argument("overrides", nargs=-1)
def cli(presets_text: str, config: str, seeds: int, iters: int | None, split: str, size: int, data_dir: str | None,
        device: str, threads: int, as_json: bool, out_dir: str, overrides: tuple[str, ...]) -> None:
    """Extra arguments are training-config overrides (key=value) applied to every run."""
    from boxseg.bench.report import write_report

    presets = parse_presets(presets_text)
    overlay = None if config.lower() == "none" else config
    check_config(presets, overlay, list(overrides))
    out = Path(out_dir)
    say = (lambda msg: click.echo(msg, err=True))
    data = ensure_data(Path(data_dir) if data_dir else None, out, split, say, size)
    rows, runs, tele = run_ablation(presets, overlay, seeds, iters, data, out, device, threads, list(overrides), say)
    meta = {"presets": presets, "config": overlay, "seeds": seeds, "iters": iters,
            "split": data_split(data) if data_dir else split, "size": None if data_dir else size,
            "data": str(data), "device": device, "threads": threads, "overrides": list(overrides), "keys": KEYS,
            "protocol": protocol(presets[0], overlay, iters, overrides),
            "metric": "COCO mask AP (%) on the val split; mean ± sample std over seeds; diff: mean of the per-seed "
                      f"differences to {REFERENCE} with its 95% t interval (diff_base: a variant's to its base "
                      "preset); converged: runs whose last two "
                      f"evaluations differ by < {CONVERGED_AP:g} AP"}
    variants = any(split_variant(p)[1] for p in presets)
    columns = ["preset", "runs", *METRICS, "box_AP", "diff", *(["diff_base"] if variants else []), "teacher_AP",
               "converged"]
    headers = {"preset": "Preset", "runs": "Runs", "box_AP": "box AP", "diff": f"Δ AP vs {REFERENCE} [95% CI]",
               "diff_base": "Δ AP vs base preset [95% CI]", "teacher_AP": "teacher AP"}
    table = write_report("ablation", rows, out, meta, PLOT, summary={"runs": runs}, columns=columns,
                         headers=headers)
    write_report("ablation_runs", runs, out, meta, {"kind": "bar", "x": ["preset", "seed"], "y": "AP",
                                                      "title": "mask AP per run", "ylabel": "mask AP (%)"})
    if tele:
        write_report("ablation_telemetry", tele, out, {**meta, "keys": ["preset", "iteration"]}, TELEMETRY_PLOT)
    if as_json:
        click.echo(json.dumps(json.loads((out / "ablation.json").read_text()), allow_nan=False))
        return
    click.echo(table)
    click.echo(f"wrote {out / 'ablation'}.{{json,csv,md,png}} and {out / 'ablation_runs'}.*", file=sys.stdout)
