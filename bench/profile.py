"""`boxseg bench train --profile`: where one training step goes, stage by stage, for several presets.

What one measurement is: each preset's real training engine (``boxseg.train.loop.Trainer``, the same set-up and
step as ``boxseg train``, with ``boxseg.bench.train.training_overrides``: every loss term active from the first
step) on synthetic ``imgsz`` x ``imgsz`` images, ``warmup`` untimed steps and then ``iters`` profiled ones. The
training code marks its stages with ``boxseg.train.profile.stage``; a step is split into the exclusive stage times
of :data:`STAGES` (they add up to the step; ``other`` is what lies outside every stage). Unlike the plain
``bench train`` step, this one includes the data loader.

All presets are built first and then stepped in turn (one step of each, then the next round), so a load change on
a shared machine hits them alike, and the ratio of each preset's step to the BoxInst step (the issue's budget: a
teacher-student step at most 1.4 x a BoxInst step at the same batch) is measured in the same rounds.

Reported per preset: the median step, the median of each stage and its share (stage median / step median; medians
do not add up exactly), the ratio to BoxInst, and for teacher-student presets what QAM and copy-paste did (valid
pseudo-mask fraction, pastes per image): with freshly initialised heads the teacher keeps few candidates, so
``--weights`` starts every preset from a trained checkpoint to profile the steady state.
Backward is one stage: autograd runs the loss terms' backward passes together.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

# Stage name -> what it covers, in the order of a step.
STAGES: dict[str, str] = {
    "data": "data loader: image decode, geometric augmentation, collation, copy to the device",
    "augment": "teacher views (resize) and the student's photometric augmentation",
    "teacher_forward": "teacher forward (no grad, eval mode); the student itself for boxinst_pc",
    "pseudo_label": "QAM or BPMA on the teacher output, incl. the mask head on the kept candidates",
    "copy_paste": "memory bank, pseudo masks to the student frame, peer copy-paste",
    "student_forward": "student forward (backbone, FPN, heads)",
    "fcos_assign": "FCOS location -> GT assignment",
    "loss_fcos": "FCOS classification + box + centerness losses (forward)",
    "mask_head": "proposal selection and the dynamic mask head on them",
    "color_similarity": "the image colour similarity of the pairwise term (once per batch)",
    "loss_projection": "BoxInst projection loss (forward)",
    "loss_pairwise": "BoxInst pairwise colour loss (forward)",
    "loss_pseudo_mask": "teacher pseudo-mask loss (forward)",
    "loss_gt_mask": "CondInst Dice on GT masks (forward)",
    "backward": "backward of the summed loss",
    "optimizer": "gradient clipping, optimizer and LR scheduler step",
    "ema": "EMA update of the teacher",
    "other": "the rest of the step (loss finiteness check, telemetry)",
}
PRESETS = ("boxinst", "boxinst_pc", "boxteacher", "boxseg", "condinst")
BASE = "boxinst"  # every ratio is to this preset's step
TARGET_RATIO = 1.4  # issue #15 item 5: teacher-student step <= 1.4 x BoxInst step
NAME = "train_profile"


# ---------------------------------------------------------------------------------------------- measuring


def _weights_factory(path: str) -> Any:
    """A Trainer model factory that builds the preset's model and loads the checkpoint's student weights."""
    from boxseg.train.checkpoint import check_same_model, load_checkpoint, load_model_weights
    from boxseg.train.config import config_to_dict

    from boxseg.model.condinst import CondInst

    ckpt = load_checkpoint(path)

    def factory(cfg: Any) -> Any:
        check_same_model(ckpt, config_to_dict(cfg.model), path)
        model = CondInst(cfg.model)
        load_model_weights(model, ckpt["model"], path)
        return model

    return factory


def build_trainers(presets: list[str], spec: dict[str, Any], root: Path, weights: str | None) -> dict[str, Any]:
    """One set-up Trainer per preset (not yet stepped), their outputs under ``root``."""
    from boxseg.bench.train import training_overrides
    from boxseg.train.config import apply_override, load_config, with_overrides
    from boxseg.train.loop import Trainer

    factory = _weights_factory(weights) if weights else None
    trainers = {}
    for preset in presets:
        cfg = with_overrides(load_config(preset, spec.get("config")),
                             training_overrides(spec, spec["data"], str(root / preset)))
        for item in spec.get("overrides", []):
            cfg = apply_override(cfg, item)
        trainer = Trainer(cfg, model_factory=factory)
        trainer._setup()  # the engine's own set-up; the steps are driven below, interleaved across presets
        trainer.model.train()
        trainers[preset] = trainer
    return trainers


def profile_steps(trainers: dict[str, Any], warmup: int, iters: int, device: str,
                  say: Any = None) -> dict[str, dict[str, Any]]:
    """Step every trainer ``warmup + iters`` times, in rounds; -> preset -> {"steps": [{stage: ms}], "telemetry":
    [{...}]} for the profiled steps."""
    from boxseg.train.profile import StepProfiler, profiling

    profilers = {p: StepProfiler(cuda=device.startswith("cuda")) for p in trainers}
    telemetry: dict[str, list[dict[str, float]]] = {p: [] for p in trainers}
    t0 = time.perf_counter()
    for it in range(warmup + iters):
        for preset, trainer in trainers.items():
            with profiling(profilers[preset]), profilers[preset].step(record=it >= warmup):
                trainer._step(it)
            if it >= warmup and trainer.last_telemetry:
                telemetry[preset].append(dict(trainer.last_telemetry))
        if say is not None:
            say(f"  round {it + 1}/{warmup + iters}{' (warm-up)' if it < warmup else ''}: "
                f"{time.perf_counter() - t0:.0f} s")
    for trainer in trainers.values():
        if trainer.dist.is_main:
            trainer.metrics.close()
    return {p: {"steps": profilers[p].steps, "telemetry": telemetry[p]} for p in trainers}


# ---------------------------------------------------------------------------------------------- summarising


def _loadavg() -> list[float] | None:
    import os

    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _mean_finite(records: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in records if key in r and r[key] == r[key]]  # drop NaN
    return sum(vals) / len(vals) if vals else None


def summarize_preset(preset: str, steps: list[dict[str, float]], telemetry: list[dict[str, float]]
                     ) -> dict[str, Any]:
    """One flat report row: median step and stage times (a stage a step did not enter counts 0 ms there)."""
    step = _median([s["step"] for s in steps])
    row: dict[str, Any] = {"preset": preset, "steps": len(steps), "step_ms": step,
                           "compute_ms": _median([s["step"] - s.get("data", 0.0) for s in steps])}
    for name in STAGES:
        row[name] = _median([s.get(name, 0.0) for s in steps])
    for name in STAGES:
        row[f"{name}_share"] = row[name] / step if step > 0 else None
    unknown = sorted({k for s in steps for k in s} - set(STAGES) - {"step"})
    if unknown:  # a stage name the training code uses but STAGES does not list: kept, not silently dropped
        for name in unknown:
            row[name] = _median([s.get(name, 0.0) for s in steps])
    row["pseudo_valid_frac"] = _mean_finite(telemetry, "pseudo_valid_frac")
    row["pastes_per_image"] = _mean_finite(telemetry, "pastes_per_image")
    return row


def add_ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each row's step (and step without data) over the BoxInst row's; the summary with the 1.4x budget."""
    base = next((r for r in rows if r["preset"] == BASE), None)
    for r in rows:
        r["x_boxinst"] = r["step_ms"] / base["step_ms"] if base and base["step_ms"] > 0 else None
        r["x_boxinst_compute"] = (r["compute_ms"] / base["compute_ms"] if base and base["compute_ms"] > 0
                                  else None)
    ratios = {r["preset"]: r["x_boxinst"] for r in rows}
    return {"base": BASE, "target_ratio": TARGET_RATIO, "x_boxinst": ratios,
            "boxseg_meets_target": (ratios["boxseg"] <= TARGET_RATIO
                                    if ratios.get("boxseg") is not None else None)}


def stage_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per stage, per preset its median ms and share of the step."""
    from boxseg.bench.report import format_value

    used = [s for s in STAGES if any(r.get(s) for r in rows)]
    head = "| stage | " + " | ".join(f"{r['preset']} ms | %" for r in rows) + " |"
    rule = "|---|" + "---:|---:|" * len(rows)
    lines = [head, rule]
    for s in used:
        cells = [f"{format_value(r[s])} | {100 * (r.get(s + '_share') or 0):.1f}" for r in rows]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("| **step** | " + " | ".join(f"**{format_value(r['step_ms'])}** | 100" for r in rows) + " |")
    lines.append("| x boxinst | " + " | ".join(f"{format_value(r['x_boxinst'])} | " for r in rows) + " |")
    return "\n".join(lines) + "\n"


def plot_stages(rows: list[dict[str, Any]], stages: list[str], path: Path) -> Path:
    """Stacked bars of the stage medians per preset (a colour per stage, legend beside the bars), each bar
    labelled with its step time and ratio to BoxInst."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(9.5, 5.0))
    try:
        pos = list(range(len(rows)))
        bottom = [0.0] * len(rows)
        for k, stage in enumerate(stages):
            heights = [float(r.get(stage) or 0.0) for r in rows]
            ax.bar(pos, heights, 0.65, bottom=bottom, label=stage, color=colours[k % len(colours)])
            bottom = [b + h for b, h in zip(bottom, heights)]
        for x, top, r in zip(pos, bottom, rows):
            ratio = r.get("x_boxinst")
            ax.annotate(f"{r['step_ms']:.0f} ms" + (f"\n{ratio:.2f}x" if ratio is not None else ""), (x, top),
                        ha="center", va="bottom", fontsize="small", xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(pos)
        ax.set_xticklabels([r["preset"] for r in rows])
        ax.set_ylabel("ms per step (median of each stage)")
        ax.set_ylim(0, max(bottom, default=1.0) * 1.15 or 1.0)
        ax.set_title("where a training step goes")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- the command


def run_profile(presets: list[str], config: str | None, batch: int, imgsz: int, iters: int, warmup: int,
                device: str, threads: int, out_dir: Path, overrides: list[str], weights: str | None = None,
                log: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Profile the presets; write ``train_profile.{json,csv,md,png}`` into ``out_dir``. -> rows, summary, the
    Markdown it wrote."""
    from boxseg.bench.report import write_report
    from boxseg.bench.train import make_data

    import boxseg.ops

    say = log or (lambda msg: click.echo(msg, err=True))
    if BASE not in presets:
        presets = [BASE, *presets]  # the ratios need it
    data = make_data(out_dir, imgsz, max(8, 2 * batch))
    spec = {"config": config, "batch": batch, "imgsz": imgsz, "iters": iters, "warmup": warmup, "device": device,
            "threads": threads, "data": str(data), "overrides": overrides}
    say(f"bench train --profile: {', '.join(presets)}; batch {batch}, {imgsz} px, {warmup} + {iters} steps each, "
        "interleaved")
    load_start = _loadavg()
    with tempfile.TemporaryDirectory(prefix="boxseg-bench-profile-") as tmp:
        trainers = build_trainers(presets, spec, Path(tmp), weights)
        import torch

        measured = profile_steps(trainers, warmup, iters, device, say)
        threads_used = torch.get_num_threads()
    rows = [summarize_preset(p, measured[p]["steps"], measured[p]["telemetry"]) for p in presets]
    summary = add_ratios(rows)
    stage_cols = [s for s in STAGES if any(r.get(s) for r in rows)]
    meta = {"presets": presets, "config": config, "batch": batch, "imgsz": imgsz, "iters": iters,
            "warmup": warmup, "device": device, "threads": threads_used, "overrides": overrides,
            "weights": weights, "ops": "fused" if boxseg.ops.fused_available(device) else "reference",
            "keys": ["preset"], "stages": STAGES,
            "statistic": "median over the profiled steps; share = stage median / step median",
            "loadavg_start": load_start, "loadavg_end": _loadavg()}  # the 1/5/15-minute load of a shared machine
    plot = {"kind": "stacked", "x": "preset", "y": stage_cols, "title": "where a training step goes (median)",
            "ylabel": "ms per step"}
    columns = ["preset", "step_ms", "x_boxinst", "compute_ms", "x_boxinst_compute", *stage_cols,
               "pseudo_valid_frac", "pastes_per_image"]
    headers = {"step_ms": "step ms", "x_boxinst": "x boxinst", "compute_ms": "step w/o data ms",
               "x_boxinst_compute": "x boxinst w/o data", "pseudo_valid_frac": "valid pseudo",
               "pastes_per_image": "pastes/img"}
    table = write_report(NAME, rows, out_dir, meta, plot, summary=summary, columns=columns, headers=headers)
    plot_stages(rows, stage_cols, out_dir / f"{NAME}.png")  # replaces the generic chart: 18 distinct colours
    md = (f"# {NAME}\n\n{table}\n## Per stage (median ms and share of the median step)\n\n{stage_table(rows)}\n"
          + "".join(f"- `{s}`: {STAGES[s]}\n" for s in stage_cols))
    from boxseg.tempfiles import write_atomic

    write_atomic(out_dir / f"{NAME}.md", md)
    return rows, summary, md


def parse_presets(text: str) -> list[str]:
    from boxseg.train.config import ConfigError, preset_path

    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not names:
        raise click.BadParameter("expected a comma-separated list of presets", param_hint="--presets")
    for name in names:
        try:
            preset_path(name)
        except ConfigError as exc:  # names the shipped presets
            raise click.BadParameter(str(exc), param_hint="--presets") from exc
    return names


PROFILE_OPTIONS = [
    click.Option(["--profile"], is_flag=True,
                 help="Split a step into stages (data, teacher, QAM/BPMA, copy-paste, forward, each loss, backward, "
                      "optimizer, EMA) for --presets, interleaved; writes train_profile.{json,csv,md,png}."),
    click.Option(["--presets"], default=",".join(PRESETS), show_default=True,
                 help="With --profile: comma-separated presets (boxinst is always added: ratios are to it)."),
    click.Option(["--weights"], default=None, type=click.Path(exists=True, dir_okay=False),
                 help="With --profile: start every preset from this checkpoint's student weights (same model "
                      "config), so the teacher's labels and the pastes are those of a trained model."),
]


def add_profile_options(cmd: click.Command) -> click.Command:
    """Give the `bench train` command ``--profile``, ``--presets`` and ``--weights`` (idempotent): with
    ``--profile`` it runs :func:`run_profile` instead of the fused/reference timing."""
    if any(p.name == "profile" for p in cmd.params):
        return cmd
    cmd.params.extend(PROFILE_OPTIONS)
    timing = cmd.callback

    def callback(profile: bool, presets: str, weights: str | None, **kwargs: Any) -> Any:
        if not profile:
            ctx = click.get_current_context()
            for name in ("presets", "weights"):
                if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
                    raise click.UsageError(f"--{name} is an option of --profile")
            return timing(**kwargs)
        return profile_cli(parse_presets(presets), weights, **kwargs)

    cmd.callback = callback
    return cmd


def profile_cli(presets: list[str], weights: str | None, config: str | None, batch: int, imgsz: int, iters: int,
                warmup: int, device: str, threads: int, as_json: bool, out_dir: str, overrides: tuple[str, ...],
                **_ignored: Any) -> None:
    """`bench train --profile`: the shared options of `bench train` (``--ops`` does not apply: the process's ops
    mode, fused unless $BOXSEG_OPS says otherwise)."""
    import json

    from boxseg.train.config import ConfigError, load_config

    from boxseg.cli import check_overrides

    check_overrides(overrides)
    try:
        for p in presets:
            load_config(p, config, overrides=list(overrides))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    out = Path(out_dir)
    _, summary, md = run_profile(presets, config, batch, imgsz, iters, warmup, device, threads, out,
                                    list(overrides), weights)
    if as_json:
        click.echo(json.dumps(json.loads((out / f"{NAME}.json").read_text()), allow_nan=False))
        return
    click.echo(md)
    ratio = summary["x_boxinst"].get("boxseg")
    if ratio is not None:
        verdict = "within" if ratio <= TARGET_RATIO else "over"
        click.echo(f"boxseg step / boxinst step: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x budget)")
    click.echo(f"wrote {out / NAME}.{{json,csv,md,png}}")
