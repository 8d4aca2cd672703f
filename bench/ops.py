"""`boxseg bench ops`: the fused custom ops against their pure-PyTorch references, time and peak memory.

Per op, at realistic shapes (stride-4 masks of 800x1344 inputs):
- pairwise: forward + backward of the BoxInst pairwise loss, N=32 instances over B=2 images, 200x336, against the
  unfold-style reference;
- color: colour similarity (LAB + 8 neighbours), B=2, 200x336;
- fusion: QMF + MQS, G=50 GTs, M=500 candidates, 200x336, against the per-GT PyTorch loop;
- nms: class-aware NMS of 10,000 boxes over 80 classes, against the per-class reference.

Time: `time.perf_counter_ns` via `boxseg.bench.timing.measure` (CUDA: synchronised), median of >= 10 runs after
warm-up. Peak memory: see `peak_tensor_mib`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from boxseg.bench.report import write_report
from boxseg.bench.timing import cuda_sync, measure

TARGETS = {"pairwise": {"speedup": 5.0, "mem_fraction": 0.25}, "fusion": {"speedup": 10.0}}
PLOT = {"kind": "bar", "x": "op", "y": ["reference_ms", "fused_ms"], "logy": True,
        "title": "boxseg.ops: reference vs fused (median ms)", "ylabel": "ms"}


@dataclass
class Case:
    op: str
    shape: str
    reference: Callable[[], Any]
    fused: Callable[[], Any]
    check: Callable[[Any, Any], float]  # max abs difference between the two results


def peak_tensor_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak of the tensor memory `fn` allocates on top of what exists when it starts, in MiB.

    CUDA: the caching allocator's `max_memory_allocated` after a reset, minus the allocation at entry.
    CPU: RSS-based figures are unreliable for torch (glibc keeps freed heap pages, the mmap threshold moves), so we
    record the CPU allocator itself: `torch.profiler` with `profile_memory=True` logs every tensor allocation and
    free (`[memory]` events with signed byte counts); their running sum in time order peaks at the answer. Plain
    `malloc` inside the kernels (a few rows of scratch per thread, tens of KiB) is not seen.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return peak / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak / 2**20


def _smooth_images(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Piecewise-constant colour regions with mild noise, so that neighbour similarities mix high and low."""
    img = torch.empty(b, 3, h, w)
    for i in range(b):
        img[i] = torch.rand(3, 1, 1, generator=gen) * 255
        for _ in range(12):
            y0, x0 = (int(torch.randint(0, s, (1,), generator=gen)) for s in (h, w))
            hh, ww = (int(torch.randint(s // 8, s // 2, (1,), generator=gen)) for s in (h, w))
            img[i, :, y0 : y0 + hh, x0 : x0 + ww] = torch.rand(3, 1, 1, generator=gen) * 255
    return (img + torch.rand(b, 3, h, w, generator=gen) * 0.6).clamp(0, 255)


def _boxes(n: int, h: int, w: int, gen: torch.Generator, lo: float = 0.05, hi: float = 0.5) -> torch.Tensor:
    """Boxes whose sides are uniform in [lo, hi] of the grid's, placed anywhere inside it."""
    bw = (torch.rand(n, generator=gen) * (hi - lo) + lo) * w
    bh = (torch.rand(n, generator=gen) * (hi - lo) + lo) * h
    x0 = torch.rand(n, generator=gen) * (w - bw)
    y0 = torch.rand(n, generator=gen) * (h - bh)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], 1)


def build_cases(device: torch.device, quick: bool = False) -> list[Case]:
    from boxseg.ops import library
    from boxseg.ops import reference as R

    gen = torch.Generator().manual_seed(0)
    b, n, h, w = (2, 4, 24, 40) if quick else (2, 32, 200, 336)
    g, k = (4, 10) if quick else (50, 10)
    n_boxes, classes = (300, 20) if quick else (10_000, 80)
    cases: list[Case] = []

    images = _smooth_images(b, h, w, gen).to(device)
    sim = R.color_similarity(images)
    logits = (torch.randn(n, h, w, generator=gen) * 3).to(device)
    img_idx = torch.randint(0, b, (n,), generator=gen).to(device)
    boxes = _boxes(n, h, w, gen).to(device)

    def pair(fn: Callable[..., torch.Tensor]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def run() -> tuple[torch.Tensor, torch.Tensor]:
            z = logits.detach().requires_grad_()
            loss = fn(z, sim, img_idx, boxes)
            (grad,) = torch.autograd.grad(loss, z)
            return loss.detach(), grad

        return run

    cases.append(Case(
        "pairwise fwd+bwd", f"N={n} B={b} {h}x{w}",
        pair(lambda z, s, i, bx: R.pairwise_affinity_loss(z, s, i, bx, 0.3, 2)),
        pair(lambda z, s, i, bx: library.pairwise_affinity_loss(z, s, i, bx, 0.3, 2)[0]),
        lambda a, c: max(float((a[0] - c[0]).abs()), float((a[1] - c[1]).abs().max())),
    ))
    cases.append(Case(
        "color similarity", f"B={b} {h}x{w}",
        lambda: R.color_similarity(images, 3, 2, 2.0),
        lambda: library.color_similarity(images, 3, 2, 2.0),
        lambda a, c: float((a - c).abs().max()),
    ))

    gt_boxes = _boxes(g, h, w, gen, 0.1, 0.6).to(device)
    gt_idx = torch.arange(g).repeat_interleave(k).to(device)
    probs = torch.rand(g * k, h, w, generator=gen).to(device)
    scores = (torch.rand(g * k, generator=gen) * 0.6 + 0.3).to(device)
    ious = torch.rand(g * k, generator=gen).to(device)
    cases.append(Case(
        "fusion (QMF+MQS)", f"G={g} M={g * k} {h}x{w}",
        lambda: R.fuse_candidate_masks(probs, gt_idx, scores, ious, gt_boxes, 0.5),
        lambda: library.fuse_candidate_masks(probs, gt_idx, scores, ious, gt_boxes, 0.5),
        lambda a, c: max(float((a[0] - c[0]).abs().max()), float((a[1] - c[1]).abs().max()),
                         float((a[2] != c[2]).sum())),
    ))

    xy = torch.rand(n_boxes, 2, generator=gen) * torch.tensor([1344.0, 800.0])
    nms_boxes = torch.cat([xy, xy + torch.rand(n_boxes, 2, generator=gen) * 200 + 4], 1).to(device)
    nms_scores = torch.rand(n_boxes, generator=gen).to(device)
    nms_classes = torch.randint(0, classes, (n_boxes,), generator=gen).to(device)
    cases.append(Case(
        "batched_nms", f"{n_boxes} boxes, {classes} classes",
        lambda: R.batched_nms(nms_boxes, nms_scores, nms_classes, 0.5),
        lambda: library.batched_nms(nms_boxes, nms_scores, nms_classes, 0.5),
        lambda a, c: float(0.0 if torch.equal(a, c) else 1.0),
    ))
    return cases


def run_cases(cases: list[Case], device: torch.device, iters: int, warmup: int,
              log: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    sync = cuda_sync(device)
    rows: list[dict[str, Any]] = []
    for case in cases:
        log(f"bench ops: {case.op} ({case.shape})")
        diff = case.check(case.reference(), case.fused())
        ref = measure(case.reference, warmup=warmup, iters=iters, sync=sync)
        fused = measure(case.fused, warmup=warmup, iters=iters, sync=sync)
        ref_mem = peak_tensor_mib(case.reference, device)
        fused_mem = peak_tensor_mib(case.fused, device)
        rows.append({
            "op": case.op,
            "shape": case.shape,
            "device": device.type,
            "runs": iters,
            "reference_ms": ref.p50,
            "fused_ms": fused.p50,
            "speedup": ref.p50 / fused.p50 if fused.p50 > 0 else float("nan"),
            "reference_peak_mib": ref_mem,
            "fused_peak_mib": fused_mem,
            "mem_fraction": fused_mem / ref_mem if ref_mem > 0 else float("nan"),
            "max_abs_diff": diff,
        })
    return rows


def check_targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Pass/fail of the CPU targets (pairwise >= 5x and <= 1/4 memory; fusion >= 10x)."""
    out: dict[str, bool] = {}
    for row in rows:
        key = row["op"].split()[0]
        if key in TARGETS:
            target = TARGETS[key]
            ok = row["speedup"] >= target["speedup"]
            if "mem_fraction" in target:
                ok = ok and row["mem_fraction"] <= target["mem_fraction"]
            out[key] = bool(ok)
    return out


@click.command("ops", help="Custom ops: fused kernels vs PyTorch references (time and peak memory).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--iters", default=10, show_default=True, type=click.IntRange(min=10), help="Timed runs per op.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(min=0), help="Untimed runs first.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--quick", is_flag=True, help="Small shapes (a smoke run), not the realistic ones.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report) instead of the table.")
@click.option("--out", "out_dir", default="runs/bench/ops", show_default=True, type=click.Path(file_okay=False),
              help="Folder for ops.json/.csv/.md/.png.")
def cli(device: str, iters: int, warmup: int, threads: int, quick: bool, as_json: bool, out_dir: str) -> None:
    from boxseg.cli import not_built
    from boxseg.ops import _build

    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        not_built("`boxseg bench ops --device cuda`", "no CUDA GPU is visible to torch")
    try:
        _build.ensure(dev.type)
    except _build.BuildError as exc:
        not_built(f"`boxseg bench ops --device {device}`", str(exc))
    say = (lambda m: click.echo(m, err=True))
    rows = run_cases(build_cases(dev, quick), dev, iters, warmup, say)
    targets = check_targets(rows) if dev.type == "cpu" and not quick else {}
    meta = {"keys": ["op", "shape", "device"], "device": device, "threads": threads, "iters": iters,
            "warmup": warmup, "quick": quick, "timing": "median of perf_counter runs after warm-up",
            "memory": "peak tensor memory above the start (CPU: profiler allocator events; CUDA: allocator peak)"}
    if dev.type == "cpu":
        meta["note"] = "CUDA kernels are exercised only by `--device cuda` on a GPU machine."
    summary = {"targets_met": targets}
    table = write_report("ops", rows, out_dir, meta, PLOT, summary=summary)
    if as_json:
        click.echo(json.dumps(json.loads((Path(out_dir) / "ops.json").read_text()), allow_nan=False))
        return
    click.echo(table)
    for key, ok in targets.items():
        click.echo(f"target {key}: {'met' if ok else 'MISSED'}")
    click.echo(f"wrote {Path(out_dir) / 'ops'}.{{json,csv,md,png}}")
