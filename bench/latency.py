"""`boxseg bench latency`: latency per backend x image size x batch, with the pre/infer/post breakdown.

What one measurement is: a batch of ``batch`` synthetic uint8 RGB images (4:3, long side = ``imgsz``, shapes on a
textured background) goes through the backend's whole pipeline (see :mod:`boxseg.bench.backends`). ``warmup``
untimed batches, then ``iters`` timed ones; the end-to-end time of each batch is taken with ``perf_counter_ns``
around ``backend.run`` (synchronising CUDA before each clock read). Reported: p50/p90/p99/mean/std of the batch
latency, MAD outliers (counted, not dropped), throughput = batch / p50, median stage times, detections per image
and peak memory over the warm-up and timed batches, model loading excluded (host RSS rise, or the CUDA
allocator peak for GPU backends; see :mod:`boxseg.bench.timing`).

Threads: every CPU backend gets the same intra-op thread count (``--threads``, default: the cores this process may
use), so backends are compared on equal terms.

The JSON "summary" holds, per size x batch on CPU, the runtime-issue ratios: runtime end-to-end / bare ORT session
run, the post-processing share of the runtime's end-to-end, and PyTorch eager end-to-end / runtime end-to-end,
each with its target.
"""

from __future__ import annotations

import difflib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from boxseg.bench.backends import (
    Backend,
    OpenVinoBackend,
    OrtBackend,
    RuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    export_checkpoint_to_onnx,
)
from boxseg.bench.machine import usable_cores
from boxseg.bench.report import write_report
from boxseg.bench.timing import PeakMemory, summarize

BACKENDS = ("torch", "ort", "runtime", "openvino", "tensorrt")
KEYS = ["backend", "device", "size", "batch"]
TARGETS = {"runtime_over_ort_infer": 1.10, "runtime_post_share": 0.05, "torch_over_runtime": 1.3}
TABLE_COLUMNS = ["model", "backend", "device", "status", "size", "batch", "p50_ms", "p90_ms", "p99_ms", "img_s",
                 "pre_ms", "infer_ms", "post_ms", "dets", "peak_mb", "spread"]
TABLE_HEADERS = {"model": "Model", "spread": "p50 spread over rounds", "backend": "Backend", "device": "Device", "status": "Status", "size": "Size", "batch": "Batch",
                 "p50_ms": "p50 ms", "p90_ms": "p90 ms", "p99_ms": "p99 ms", "img_s": "img/s",
                 "pre_ms": "pre ms", "infer_ms": "infer ms", "post_ms": "post ms", "dets": "dets/img",
                 "peak_mb": "peak MB"}
PLOT = [
    {"kind": "bar", "x": ["size", "batch"], "y": "p50_ms", "group": ["backend", "device"],
     "title": "p50 latency per batch", "ylabel": "ms", "xlabel": "size, batch"},
    {"kind": "stacked", "x": ["backend", "device", "size", "batch"], "y": ["pre_ms", "infer_ms", "post_ms"],
     "title": "stage breakdown (median)", "ylabel": "ms"},
]


def synthetic_images(imgsz: int, batch: int, seed: int = 0, instances: int = 20) -> list[np.ndarray]:
    """``batch`` uint8 (3/4 imgsz, imgsz, 3) RGB images: smooth gradient + noise with ``instances`` shapes."""
    rng = np.random.default_rng(seed)
    h, w = max(32, round(imgsz * 3 / 4)), imgsz
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(batch):
        base = 90 + 60 * np.sin(xx / (17 + rng.uniform(0, 20)))[..., None] * np.cos(yy / 23)[..., None]
        img = base + rng.normal(0, 8, (h, w, 3))
        for _ in range(instances):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.03, 0.15) * h, rng.uniform(0.03, 0.15) * w
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            img[inside] = rng.uniform(0, 255, 3)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"expected positive integers, got {text!r}", param_hint=option)
    return values


def parse_backends(text: str) -> list[str]:
    names = [v.strip().lower() for v in text.split(",") if v.strip()]
    for name in names:
        if name not in BACKENDS:
            close = difflib.get_close_matches(name, BACKENDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise click.BadParameter(f"unknown backend {name!r}.{hint} Choose from {', '.join(BACKENDS)}.",
                                     param_hint="--backends")
    if not names:
        raise click.BadParameter("no backend given", param_hint="--backends")
    return list(dict.fromkeys(names))


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class Skipped(Backend):
    """A backend that cannot run here, with the reason."""

    def __init__(self, name: str, device: str, reason: str) -> None:
        super().__init__(device)
        self.name = name
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason


def make_backends(model: Path, names: list[str], threads: int, sizes: list[int], batches: list[int],
                  tmp_dir: Path) -> list[Backend]:
    """One backend object per (backend, device) to measure; a ``Skipped`` where it cannot be built."""
    suffix = model.suffix.lower()
    onnx_path: Path | None = model if suffix == ".onnx" else None
    onnx_reason = ""
    if suffix == ".pt" and {"ort", "runtime", "openvino", "tensorrt"} & set(names):
        onnx_path, onnx_reason = export_checkpoint_to_onnx(model, tmp_dir)
    elif suffix not in (".pt", ".onnx", ".engine", ".plan"):
        onnx_reason = f"unknown model file type {model.suffix!r}"
    out: list[Backend] = []
    for name in names:
        if name == "torch":
            out.append(TorchBackend(model, device="cpu", threads=threads))
            if _torch_cuda():
                out.append(TorchBackend(model, device="cuda", threads=threads))
        elif name in ("ort", "runtime", "openvino"):
            cls = {"ort": OrtBackend, "runtime": RuntimeBackend, "openvino": OpenVinoBackend}[name]
            if onnx_path is None:
                out.append(Skipped(name, "cpu", onnx_reason or f"needs an ONNX file, got {model.name}"))
                continue
            out.append(cls(onnx_path, device="cpu", threads=threads))
            if name == "ort" and _ort_cuda():
                out.append(OrtBackend(onnx_path, device="cuda", threads=threads))
        elif name == "tensorrt":
            engine = model if suffix in (".engine", ".plan") else onnx_path
            if engine is None:
                out.append(Skipped(name, "cuda", onnx_reason))
                continue
            out.append(TensorRTBackend(engine, device="cuda", max_imgsz=max(sizes), max_batch=max(batches)))
    return out


def time_batches(backend: Backend, size: int, batch: int, iters: int, warmup: int) -> dict[str, Any]:
    """Time one backend at one size x batch: the raw samples (end-to-end and stage ms, detections per image) and
    the peak memory."""
    backend.prepare(size, batch)
    images = synthetic_images(size, batch)
    cuda = backend.device.startswith("cuda")
    e2e: list[float] = []
    stages: dict[str, list[float]] = {"pre": [], "infer": [], "post": []}
    dets: list[float] = []
    with PeakMemory(backend.device if cuda else None) as mem:
        for _ in range(warmup):
            backend.run(images)
        for _ in range(iters):
            backend.sync()
            t0 = time.perf_counter_ns()
            out = backend.run(images)
            backend.sync()
            e2e.append((time.perf_counter_ns() - t0) / 1e6)
            for k, samples in stages.items():
                if out.get(k) is not None:
                    samples.append(float(out[k]))
            if out.get("dets") is not None:
                dets.append(float(out["dets"]) / batch)
    return {"e2e": e2e, "stages": stages, "dets": dets, "peak_mb": mem.mb}


def measure_one(backend: Backend, size: int, batch: int, iters: int, warmup: int) -> dict[str, Any]:
    """Time one backend at one size x batch (one round); returns the row's metric fields."""
    return summarize_rounds([time_batches(backend, size, batch, iters, warmup)], batch)


def summarize_rounds(rounds: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """The row's metric fields from one or more rounds of `time_batches`: statistics over the pooled samples, and
    with several rounds each round's p50 and their spread ((max - min) / median), which says how far one sample of
    `iters` batches can be trusted on this machine."""
    e2e = [v for r in rounds for v in r["e2e"]]
    stages = {k: [v for r in rounds for v in r["stages"][k]] for k in ("pre", "infer", "post")}
    dets = [v for r in rounds for v in r["dets"]]
    st = summarize(e2e)
    med = {k: (float(np.median(v)) if len(v) == len(e2e) else None) for k, v in stages.items()}
    round_p50 = [summarize(r["e2e"]).p50 for r in rounds]
    peaks = [r["peak_mb"] for r in rounds if r["peak_mb"] is not None]
    return {
        "rounds": len(rounds), "round_p50_ms": " ".join(f"{v:.2f}" for v in round_p50),
        "spread": (max(round_p50) - min(round_p50)) / float(np.median(round_p50)) if len(rounds) > 1 else None,
        "p50_ms": st.p50, "p90_ms": st.p90, "p99_ms": st.p99, "mean_ms": st.mean, "std_ms": st.std,
        "min_ms": st.min, "outliers": st.outliers, "img_s": batch * 1000.0 / st.p50 if st.p50 > 0 else None,
        "pre_ms": med["pre"], "infer_ms": med["infer"], "post_ms": med["post"],
        "dets": float(np.mean(dets)) if dets else None, "peak_mb": max(peaks) if peaks else None,
    }


def run_latency(models: list[Path], names: list[str], sizes: list[int], batches: list[int], iters: int,
                warmup: int, threads: int, log: Any = None, repeats: int = 1) -> list[dict[str, Any]]:
    """Every model x backend x size x batch; never raises for a backend that is missing or fails (status says
    why). With ``repeats`` > 1 the whole sweep runs that many rounds, and inside a round every (model, backend) of a
    size x batch is timed one after the other, starting from a different one each round, so a slow spell of a
    shared machine hits them alike instead of whichever happened to run then."""
    say = log or (lambda msg: click.echo(msg, err=True))
    rows: list[dict[str, Any]] = []
    labelled = len(models) > 1
    with tempfile.TemporaryDirectory(prefix="boxseg-bench-") as tmp:
        live: list[tuple[dict[str, Any], Backend]] = []
        try:
            for k, model in enumerate(models):
                for backend in make_backends(model, backends_for(model, models, names), threads, sizes, batches,
                                             Path(tmp) / str(k)):
                    base = {**({"model": model.name} if labelled else {}), "backend": backend.name,
                            "device": backend.device}
                    ok, reason = backend.available()
                    if not ok:
                        say(f"{_label(base)}: skipped: {reason}")
                        rows.append({**base, "status": f"skipped: {reason}", "size": None, "batch": None,
                                     "threads": None})
                        backend.close()
                        continue
                    live.append((base, backend))
            samples: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
            errors: dict[tuple[int, int, int], str] = {}
            for rnd in range(repeats):
                for size in sizes:
                    for batch in batches:
                        start = rnd % max(1, len(live))
                        for j in [*range(start, len(live)), *range(start)]:
                            base, backend = live[j]
                            key = (j, size, batch)
                            if key in errors:
                                continue
                            say(f"{_label(base)} size {size} batch {batch}"
                                + (f" (round {rnd + 1}/{repeats})" if repeats > 1 else "") + " ...")
                            try:
                                samples.setdefault(key, []).append(time_batches(backend, size, batch, iters, warmup))
                            except Exception as exc:  # noqa: BLE001 - one failing backend must not end the bench
                                errors[key] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
                                say(f"  {errors[key]}")
            for j, (base, backend) in enumerate(live):
                for size in sizes:
                    for batch in batches:
                        row = {**base, "status": "ok", "size": size, "batch": batch,
                               "threads": threads if backend.device == "cpu" else None}
                        if (j, size, batch) in errors:
                            row["status"] = errors[(j, size, batch)]
                        else:
                            row.update(summarize_rounds(samples[(j, size, batch)], batch))
                        rows.append(row)
        finally:
            for _, backend in live:
                backend.close()
    return rows


def backends_for(model: Path, models: list[Path], names: list[str]) -> list[str]:
    """With several models side by side, eager PyTorch runs on the checkpoints and the engines on the exported
    files (a checkpoint would otherwise be exported again next to the given exports); alone, a model gets all."""
    if len(models) < 2:
        return names
    if model.suffix.lower() == ".pt":
        return [n for n in names if n == "torch"]
    return [n for n in names if n != "torch"]


def _label(base: dict[str, Any]) -> str:
    return f"{base['model'] + ' ' if 'model' in base else ''}{base['backend']} ({base['device']})"


def summarize_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Runtime-issue ratios on CPU per size x batch (see module docstring); None where a backend is missing."""
    ok = {(r.get("model"), r["backend"], r["size"], r["batch"]): r for r in rows
          if r.get("status") == "ok" and r["device"] == "cpu"}
    out: dict[str, Any] = {"targets": dict(TARGETS)}
    for model, size, batch in sorted({(m, s, b) for m, _, s, b in ok}, key=lambda k: (k[0] or "", k[1], k[2])):
        rt, ort, pt = (ok.get((model, n, size, batch)) for n in ("runtime", "ort", "torch"))

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        entry: dict[str, Any] = {
            "runtime_e2e_ms": rt and rt["p50_ms"],
            "ort_infer_ms": ort and ort["infer_ms"],
            "ort_e2e_ms": ort and ort["p50_ms"],
            "torch_e2e_ms": pt and pt["p50_ms"],
            "dets_per_image": (rt or ort or pt or {}).get("dets"),
            "runtime_over_ort_infer": ratio(rt and rt["p50_ms"], ort and ort["infer_ms"]),
            "runtime_post_share": ratio(rt and rt["post_ms"], rt and rt["p50_ms"]),
            "ort_over_ort_infer": ratio(ort and ort["p50_ms"], ort and ort["infer_ms"]),
            "torch_over_runtime": ratio(pt and pt["p50_ms"], rt and rt["p50_ms"]),
        }
        entry["meets"] = {
            "runtime_over_ort_infer": None if entry["runtime_over_ort_infer"] is None
            else entry["runtime_over_ort_infer"] <= TARGETS["runtime_over_ort_infer"],
            "runtime_post_share": None if entry["runtime_post_share"] is None
            else entry["runtime_post_share"] <= TARGETS["runtime_post_share"],
            "torch_over_runtime": None if entry["torch_over_runtime"] is None
            else entry["torch_over_runtime"] >= TARGETS["torch_over_runtime"],
        }
        out[f"{model + '_' if model else ''}size{size}_batch{batch}"] = entry
    return out


@click.command("latency", help="Latency per backend x image size x batch, with a stage breakdown.")
@click.option("--model", "model_paths", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A checkpoint (.pt) or an exported model (.onnx; .engine/.plan for tensorrt). Repeat it to put "
                   "models side by side (e.g. the fp32 and int8 exports): rows then carry the model's file name.")
@click.option("--backends", default=",".join(BACKENDS), show_default=True,
              help=f"Comma-separated subset of {', '.join(BACKENDS)}.")
@click.option("--imgsz", default="640", show_default=True, help="Comma-separated long-side sizes, e.g. 512,640,800.")
@click.option("--batch", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,4.")
@click.option("--iters", default=50, show_default=True, type=click.IntRange(min=1), help="Timed batches.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0),
              help="Untimed batches before timing.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Intra-op threads for every CPU backend [default: the cores this process may use].")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="Rounds of the whole sweep, backends interleaved; rows add each round's p50 and their spread.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the report) instead of the table.")
@click.option("--out", "out_dir", default="runs/bench/latency", show_default=True, type=click.Path(file_okay=False),
              help="Folder for latency.json/.csv/.md/.png.")
def cli(model_paths: tuple[str, ...], backends: str, imgsz: str, batch: str, iters: int, warmup: int,
        threads: int | None, repeats: int, as_json: bool, out_dir: str) -> None:
    names = parse_backends(backends)
    sizes = parse_int_list(imgsz, "--imgsz")
    batches = parse_int_list(batch, "--batch")
    threads = threads or usable_cores()
    models = [Path(p) for p in dict.fromkeys(model_paths)]
    if len({m.name for m in models}) < len(models):
        raise click.BadParameter("models must have different file names (rows are labelled by them)",
                                 param_hint="--model")
    rows = run_latency(models, names, sizes, batches, iters, warmup, threads, repeats=repeats)
    summary = summarize_targets(rows)
    from boxseg.bench.machine import machine_info

    meta = {"model": ", ".join(str(m) for m in models), "backends": names, "repeats": repeats, "imgsz": sizes, "batch": batches, "iters": iters,
            "warmup": warmup, "threads": threads, "keys": (["model"] if len(models) > 1 else []) + KEYS,
            "input": "synthetic uint8 RGB, 4:3, long side = size, 20 shapes per image"}
    table = write_report("latency", rows, out_dir, meta, PLOT, summary=summary,
                         machine=machine_info(with_torch="torch" in sys.modules),
                         columns=[c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)],
                         headers=TABLE_HEADERS)
    if as_json:
        click.echo(json.dumps(json.loads((Path(out_dir) / "latency.json").read_text()), allow_nan=False))
        return
    click.echo(table)
    for key, entry in summary.items():
        if key == "targets":
            continue
        parts = []
        for name, target in TARGETS.items():
            value = entry[name]
            if value is not None:
                mark = "ok" if entry["meets"][name] else "MISSED"
                sign = ">=" if name == "torch_over_runtime" else "<="
                parts.append(f"{name} {value:.3g} (target {sign} {target}: {mark})")
        if parts:
            click.echo(f"{key}: " + "; ".join(parts))
    click.echo(f"wrote {Path(out_dir) / 'latency'}.{{json,csv,md,png}}")
