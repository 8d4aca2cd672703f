"""`boxseg bench train`: training-step throughput and peak memory, with the fused ops and with their references.

What one measurement is: the preset's real training engine (``boxseg.train.loop.Trainer``, with its data
pipeline) runs ``warmup + iters`` iterations on synthetic images of ``imgsz`` x ``imgsz``. A step is timed from
the start of the method's ``prepare_batch`` (the batch is already loaded; for teacher-student presets this
includes the teacher's pass) to the end of its ``after_step`` (after backward, the optimizer step and the EMA
update), with ``perf_counter_ns`` (CUDA synchronised). The first ``warmup`` steps are not timed. Reported: p50 and
mean step time, it/s and img/s from the p50, the peak memory rise over all steps (host RSS, or CUDA allocator
peak; see :mod:`boxseg.bench.timing`) and the process's absolute peak RSS.

Ops modes run in separate processes with ``BOXSEG_OPS`` set (``fused``: a failed kernel build is an error rather
than a silent fall-back; ``reference``: the pure-PyTorch references), so each mode has a fresh process and its
own memory figures. Both start from the same seed and batches, so their loss terms over the first two steps must
agree up to the kernels' rounding (``first_steps_max_term_diff`` in the summary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

OPS_MODES = ("fused", "reference")
KEYS = ["preset", "ops", "device", "batch", "imgsz"]
TABLE_COLUMNS = ["preset", "ops", "device", "status", "batch", "imgsz", "step_ms_p50", "step_ms_mean", "it_s",
                 "img_s", "peak_mb", "rss_peak_mb", "first_loss"]
TABLE_HEADERS = {"preset": "Preset", "ops": "Ops", "device": "Device", "status": "Status", "batch": "Batch",
                 "imgsz": "Size", "step_ms_p50": "step p50 ms", "step_ms_mean": "step mean ms", "it_s": "it/s",
                 "img_s": "img/s", "peak_mb": "peak MB", "rss_peak_mb": "RSS peak MB", "first_loss": "loss@0"}
PLOT = [
    {"kind": "bar", "x": "ops", "y": "step_ms_p50", "group": "preset", "title": "training step (p50)",
     "ylabel": "ms"},
    {"kind": "bar", "x": "ops", "y": "peak_mb", "group": "preset", "title": "peak memory during the steps",
     "ylabel": "MB"},
]
_RESULT_PREFIX = "BOXSEG_BENCH_TRAIN_RESULT "


# ---------------------------------------------------------------------------------------------- the worker


def training_overrides(spec: dict[str, Any], data_dir: str, out_dir: str) -> dict[str, Any]:
    """Config values (for ``with_overrides``) that make the preset train ``warmup + iters`` steps on ``imgsz``
    squares, every loss term active from the first step (warm-ups at 0, so the ops under test run in every timed
    step)."""
    size, total = int(spec["imgsz"]), int(spec["warmup"]) + int(spec["iters"])
    return {
        "data.train_dir": data_dir, "runtime.out_dir": out_dir, "runtime.device": str(spec["device"]),
        "runtime.threads": int(spec["threads"]), "runtime.seed": 0, "runtime.checkpoint_every": 0,
        "runtime.eval_every": 0, "runtime.progress": False, "runtime.log_every": total, "data.workers": 0,
        "solver.ims_per_batch": int(spec["batch"]), "solver.max_iter": total, "solver.steps": [total + 1],
        "solver.warmup_iters": 0,
        "input.train_scales": [size], "input.train_max_size": size, "input.test_size": size,
        "input.test_max_size": size, "teacher.input.short": size, "teacher.input.max": size,
        "loss.pairwise_warmup_iters": 0, "loss.mask_sup.warmup_iters": 0,
    }


def measure_training(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the timed training in this process (the ops mode comes from $BOXSEG_OPS). Returns plain numbers."""
    import torch
    from boxseg.bench.timing import PeakMemory, summarize
    from boxseg.train.config import apply_override, load_config, with_overrides
    from boxseg.train.loop import Trainer, build_method

    import boxseg.ops

    device = str(spec["device"])
    warmup = int(spec["warmup"])
    with tempfile.TemporaryDirectory(prefix="boxseg-bench-train-") as tmp:
        cfg = with_overrides(load_config(spec["preset"], spec.get("config")),
                             training_overrides(spec, spec["data"], tmp), source="bench train's settings")
        for item in spec.get("overrides", []):
            cfg = apply_override(cfg, item)
        cuda = device.startswith("cuda")
        sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
        samples: list[float] = []
        mem = PeakMemory(device if cuda else None)
        state: dict[str, Any] = {}

        def factory(c: Any, student: Any, criterion: Any) -> Any:
            method = build_method(c, student, criterion)
            prepare, after = method.prepare_batch, method.after_step

            def timed_prepare(batch: dict[str, Any], it: int) -> dict[str, Any]:
                if it == 0:
                    mem.__enter__()
                sync()
                state["t0"] = time.perf_counter_ns()
                return prepare(batch, it)

            def timed_after(it: int) -> None:
                after(it)
                sync()
                if it >= warmup:
                    samples.append((time.perf_counter_ns() - state["t0"]) / 1e6)
                if it == c.solver.max_iter - 1:
                    mem.__exit__(None, None, None)

            method.prepare_batch, method.after_step = timed_prepare, timed_after  # type: ignore[method-assign]
            return method

        trainer = Trainer(cfg, method_factory=factory)
        trainer.train()
    st = summarize(samples)
    return {
        "step_ms_p50": st.p50, "step_ms_mean": st.mean, "step_ms_std": st.std, "step_ms_min": st.min,
        "outliers": st.outliers, "peak_mb": mem.mb, "rss_peak_mb": _rss_peak_mb(),
        "fused": bool(boxseg.ops.fused_available(device)), "threads": torch.get_num_threads(),
        "first_loss": trainer.history[0]["total"] if trainer.history else None,
        "last_loss": trainer.history[-1]["total"] if trainer.history else None,
        "first_losses": trainer.history[:2],  # every loss term of the first two steps (compared across modes)
    }


def _rss_peak_mb() -> float:
    """The process's lifetime peak resident set size (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def worker_main() -> None:
    """Entry point of the per-mode subprocess: spec JSON in argv[1], one result line on stdout."""
    spec = json.loads(sys.argv[1])
    result = measure_training(spec)
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


def run_mode(spec: dict[str, Any], ops: str) -> dict[str, Any]:
    """One ops mode in a fresh process; the result dict, or ``{"status": "error: ..."}``."""
    env = dict(os.environ, BOXSEG_OPS=ops)
    cmd = [sys.executable, "-c", "from boxseg.bench.train import worker_main; worker_main()", json.dumps(spec)]
    proc = subprocess.run(cmd, check=False, env=env, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return {"status": f"error: the {ops} run exited with status {proc.returncode} (its stderr is above)"}
    result = json.loads(lines[-1][len(_RESULT_PREFIX):])
    if ops == "fused" and not result["fused"]:
        return {"status": "error: BOXSEG_OPS=fused but the fused kernels were not used", **result}
    return {"status": "ok", **result}


def make_data(root: Path, imgsz: int, count: int) -> Path:
    """Synthetic training images for the bench (rewritten each run: deterministic and a second or two)."""
    from boxseg.data.synth import generate_dataset

    folder = root / f"data_{imgsz}"
    generate_dataset(folder, num_images=count, size=(imgsz, imgsz), seed=0, progress=False)
    return folder


def run_bench(preset: str, config: str | None, batch: int, imgsz: int, iters: int, warmup: int, ops: list[str],
              device: str, threads: int, out_dir: Path, overrides: list[str], log: Any = None
              ) -> tuple[list[dict], dict]:
    """Rows (one per ops mode) and the summary (reference / fused ratios)."""
    say = log or (lambda msg: click.echo(msg, err=True))
    data = make_data(out_dir, imgsz, max(8, 2 * batch))
    spec = {"preset": preset, "config": config, "batch": batch, "imgsz": imgsz, "iters": iters, "warmup": warmup,
            "device": device, "threads": threads, "data": str(data), "overrides": overrides}
    rows = []
    for mode in ops:
        say(f"bench train: {preset}, ops={mode}, batch {batch}, {imgsz} px, {warmup} + {iters} steps ...")
        res = run_mode(spec, mode)
        row: dict[str, Any] = {"preset": preset, "ops": mode, "device": device, "status": res["status"],
                               "batch": batch, "imgsz": imgsz, "iters": iters, "threads": res.get("threads")}
        if res["status"] == "ok":
            p50 = res["step_ms_p50"]
            row.update({k: res[k] for k in ("step_ms_p50", "step_ms_mean", "step_ms_std", "step_ms_min",
                                            "outliers", "peak_mb", "rss_peak_mb", "first_loss", "last_loss")})
            row["first_losses"] = res["first_losses"]  # not a report column (nested); read by summarize_modes
            row["it_s"] = 1000.0 / p50 if p50 > 0 else None
            row["img_s"] = batch * 1000.0 / p50 if p50 > 0 else None
            say(f"  {p50:.1f} ms/step (p50), {row['img_s']:.2f} img/s, peak {res['peak_mb']:.0f} MB")
        else:
            say(f"  {res['status']}")
        rows.append(row)
    summary = summarize_modes(rows)
    for row in rows:
        row.pop("first_losses", None)
    return rows, summary


def summarize_modes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = {r["ops"]: r for r in rows if r["status"] == "ok"}
    fused, ref = ok.get("fused"), ok.get("reference")
    out: dict[str, Any] = {"reference_over_fused_step": None, "reference_over_fused_peak_mb": None,
                           "first_loss_abs_diff": None, "first_steps_max_term_diff": None}
    if fused and ref:
        out["reference_over_fused_step"] = ref["step_ms_p50"] / fused["step_ms_p50"]
        if fused["peak_mb"]:
            out["reference_over_fused_peak_mb"] = ref["peak_mb"] / fused["peak_mb"]
        if fused["first_loss"] is not None and ref["first_loss"] is not None:
            out["first_loss_abs_diff"] = abs(fused["first_loss"] - ref["first_loss"])
        diffs = [abs(a[k] - b[k]) for a, b in zip(fused["first_losses"], ref["first_losses"]) for k in a if k in b]
        out["first_steps_max_term_diff"] = max(diffs) if diffs else None
    return out


def parse_ops(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in OPS_MODES]
    if bad or not modes:
        raise click.BadParameter(f"expected a comma-separated subset of {', '.join(OPS_MODES)}, got {text!r}",
                                 param_hint="--ops")
    return list(dict.fromkeys(modes))


@click.command("train", help="Training-step throughput and peak memory, fused vs reference ops.")
@click.option("--preset", default="boxinst", show_default=True, help="Training preset (configs/<preset>.yaml).")
@click.option("--config", "config", default=None,
              help="Config overlay (YAML file or shipped name, e.g. synthetic_cpu) applied over the preset.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1), help="Images per step.")
@click.option("--imgsz", default=320, show_default=True, type=click.IntRange(min=64), help="Square image side.")
@click.option("--iters", default=20, show_default=True, type=click.IntRange(min=1), help="Timed steps.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0), help="Untimed steps first.")
@click.option("--ops", "ops_text", default="fused,reference", show_default=True,
              help="Comma-separated ops modes to measure (fused, reference).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch intra-op threads; 0 = torch's default.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report) instead of the table.")
@click.option("--out", "out_dir", default="runs/bench/train", show_default=True, type=click.Path(file_okay=False),
              help="Folder for train.json/.csv/.md/.png (and the synthetic images).")
@click.argument("overrides", nargs=-1)
def cli(preset: str, config: str | None, batch: int, imgsz: int, iters: int, warmup: int, ops_text: str,
        device: str, threads: int, as_json: bool, out_dir: str, overrides: tuple[str, ...]) -> None:
    """Extra arguments are training-config overrides (key=value), e.g. model.fpn_channels=128."""
    from boxseg.bench.report import write_report
    from boxseg.train.config import ConfigError, load_config

    from boxseg.cli import check_overrides

    ops = parse_ops(ops_text)
    check_overrides(overrides)
    try:  # fail here, not in every subprocess, on a bad preset or override
        load_config(preset, config, overrides=list(overrides))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    out = Path(out_dir)
    rows, summary = run_bench(preset, config, batch, imgsz, iters, warmup, ops, device, threads, out,
                              list(overrides))
    meta = {"preset": preset, "config": config, "batch": batch, "imgsz": imgsz, "iters": iters, "warmup": warmup, "ops": ops,
            "device": device, "threads": threads, "overrides": list(overrides), "keys": KEYS,
            "step": "prepare_batch (teacher, copy-paste) + forward + losses + backward + optimizer + EMA"}
    table = write_report("train", rows, out, meta, PLOT, summary=summary, columns=TABLE_COLUMNS,
                         headers=TABLE_HEADERS)
    if as_json:
        click.echo(json.dumps(json.loads((out / "train.json").read_text()), allow_nan=False))
    else:
        click.echo(table)
        if summary["reference_over_fused_step"] is not None:
            click.echo(f"reference / fused step time: {summary['reference_over_fused_step']:.2f}x; largest loss-term "
                       f"difference over the first two steps: {summary['first_steps_max_term_diff']:.2e}")
        click.echo(f"wrote {out / 'train'}.{{json,csv,md,png}}")
    if any(r["status"] != "ok" for r in rows):
        raise SystemExit(1)
