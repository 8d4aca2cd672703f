"""`boxseg demo`: data -> baselines -> train -> eval -> export -> runtime predict -> latency bench, with a summary.

The pipeline lives in :mod:`boxseg.demo`; this module parses options and prints. Progress (a line per stage,
the stages' own tqdm bars) goes to stderr; the summary (or with ``--json`` one JSON object) to stdout.
Exit status: 0 when every stage succeeded, 1 when a stage failed (it is named; the later ones did not run).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from boxseg.cli import COMMANDS, check_overrides


@click.command("demo", help=COMMANDS["demo"])
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every artefact (data, checkpoint, ONNX, overlays, reports, summary.json).")
@click.option("--quick", is_flag=True, help="Tiny plan for CI: 24/8 images, 20 iterations, few bench runs "
              "(under 2 minutes on 2 cores). Default plan: 600/150 images, 800 iterations (under 10 minutes).")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Training iterations (overrides the plan).")
@click.option("--device", default="cpu", show_default=True, help="Training/eval device: cpu | cuda | cuda:N.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Torch and runtime threads; 0 = the cores this process may use.")
@click.option("--preset", default="boxseg", show_default=True, help="Training preset (configs/<preset>.yaml).")
@click.option("--config", "config", default="synthetic_cpu", show_default=True,
              help="Config overlay (a YAML file or a shipped name) applied over the preset; 'none' for the bare "
                   "preset.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the summary) on stdout.")
@click.argument("overrides", nargs=-1)
def cli(out_dir: str, quick: bool, iters: int | None, device: str, threads: int, preset: str, config: str,
        seed: int, as_json: bool, overrides: tuple[str, ...]) -> None:
    """The whole pipeline on built-in synthetic data. Extra arguments are training-config overrides
    (key=value, e.g. solver.lr=0.02), applied after the demo's own settings."""
    check_overrides(overrides)
    from boxseg.demo import DemoSettings, run_demo

    settings = DemoSettings(out_dir=Path(out_dir), quick=quick, iters=iters, device=device, threads=threads,
                            preset=preset, config=None if config.lower() == "none" else config,
                            overrides=tuple(overrides), seed=seed)
    # Whatever a stage prints goes to stderr with the progress: stdout carries only the summary (or the JSON).
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_demo(settings)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(format_summary(summary))
    if not summary["ok"]:
        click.echo(f"boxseg demo: stage '{summary['failed_stage']}' failed; see {summary['out_dir']}/logs/",
                   err=True)
        raise SystemExit(1)


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def format_summary(s: dict[str, Any]) -> str:
    """The human summary: stage table, mask AP next to the baselines, latency, artefact paths."""
    state = "ok" if s["ok"] else f"FAILED at {s['failed_stage']}"
    lines = [f"boxseg demo ({'quick' if s['settings']['quick'] else 'full'}) in {s['seconds']:.1f} s: {state}", ""]
    width = max(len(st["name"]) for st in s["stages"])
    lines.append(f"  {'stage':<{width}}  {'status':<9}  {'seconds':>7}  detail")
    for st in s["stages"]:
        lines.append(f"  {st['name']:<{width}}  {st['status']:<9}  {st['seconds']:>7.1f}  {st['detail']}")
    if s["mask_ap"]:
        lines += ["", "  mask AP on val (%)"]
        names = list(s["mask_ap"])
        w = max(len(n) for n in names)
        cols = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        lines.append(f"  {'':<{w}}" + "".join(f"{c:>7}" for c in cols))
        for name in names:
            lines.append(f"  {name:<{w}}" + "".join(f"{_cell(s['mask_ap'][name].get(c)):>7}" for c in cols))
    if s.get("labels"):
        lab = s["labels"]
        rho = lab.get("spearman_w_iou")
        miou = lab.get("miou")
        lines += ["", (f"  labels for the val boxes (boxseg label): mean IoU with GT "
                       f"{'-' if miou is None else f'{miou:.3f}'} over {lab.get('valid')} of "
                       f"{lab.get('annotations')} boxes, Spearman(w, IoU) {'-' if rho is None else f'{rho:.2f}'}")]
    if s.get("export"):
        e = s["export"]
        lines += ["", f"  ONNX: {e['size_mb']:.1f} MB, verified against PyTorch: {'yes' if e['verified'] else 'no'}"]
    if s.get("latency"):
        lines += ["", "  latency, batch 1 (p50 ms): " + ", ".join(
            f"{r['backend']} {_cell(r['p50_ms'])}" if r.get("p50_ms") is not None else f"{r['backend']} "
            f"({r['status']})" for r in s["latency"])]
    lines += ["", "  artefacts:"]
    w = max(len(k) for k in s["artefacts"])
    lines += [f"    {k:<{w}}  {v}" for k, v in s["artefacts"].items()]
    return "\n".join(lines)
