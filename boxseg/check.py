"""`boxseg check`: one command that says whether this machine trains, exports and deploys BoxSeg.

Steps (each one ok, failed with the last lines of its error, or skipped with the reason, and its wall time):

- ``environment``: torch, CUDA, ONNX Runtime providers, TensorRT (informational; never fails);
- ``ops``: every fused kernel against the float64 pure-PyTorch reference on random inputs (gradients included,
  empty inputs included), in float64 and float32; on ``--device cuda`` the CPU and the CUDA kernels, and the CUDA
  kernel against the CPU kernel. Self-contained (no tests folder needed: an installed wheel can run it);
- ``bench_ops``: ``boxseg bench ops --device D --quick`` (time and memory of the kernels at small shapes);
- ``train``: the ``boxseg`` preset on built-in synthetic data. CUDA: 100 iterations with AMP; CPU: 20 iterations at
  a small size without AMP (AMP is CUDA-only here), so the CPU run takes a minute or two. A finite loss is required;
- ``export_runtime``: the trained student to ONNX, run by ONNX Runtime with the device's execution provider
  (CUDAExecutionProvider for cuda) and compared with PyTorch by ``boxseg.export.verify.compare_detections``; then
  ``boxseg.runtime.Predictor`` on the same device runs the file on a few images;
- ``tensorrt``: a TensorRT engine built from the student and compared with PyTorch, where ``tensorrt`` imports and a
  CUDA device exists.

On a machine without a GPU, ``--device cuda`` runs to the end with every CUDA step skipped (reason: no CUDA device).
The overall result is ok when no step failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("ok", "failed", "skipped")
ERROR_LINES = 12  # lines of a failed step's traceback kept in the report


class Skip(Exception):
    """Raised by a step that cannot run here; the message is the reason."""


@dataclass
class StepResult:
    name: str
    status: str  # one of STATUSES
    seconds: float
    detail: str = ""  # what was measured (ok), the reason (skipped) or the error's last lines (failed)
    data: dict[str, Any] = field(default_factory=dict)


def run_step(name: str, fn: Callable[[], dict[str, Any] | None], log: Callable[[str], None] | None = None
             ) -> StepResult:
    """Run one step: its result, never its exception (Ctrl-C still stops the whole check)."""
    if log is not None:
        log(f"boxseg check: {name} ...")
    start = time.perf_counter()
    try:
        data = fn() or {}
        status, detail = "ok", str(data.pop("summary", ""))
    except Skip as exc:
        data, status, detail = {}, "skipped", str(exc)
    except Exception:  # noqa: BLE001 - any failure of a step is reported, and the next step runs
        lines = traceback.format_exc().rstrip().splitlines()
        data, status, detail = {}, "failed", "\n".join(lines[-ERROR_LINES:])
    result = StepResult(name, status, time.perf_counter() - start, detail, data)
    if log is not None:
        first = detail.splitlines()[-1] if status == "failed" and detail else detail
        log(f"  {status} ({result.seconds:.1f} s){': ' + first if first else ''}")
    return result


# ---------------------------------------------------------------------------------------------- the steps


def cuda_reason(device: str) -> str | None:
    """Why a step for `device` cannot run here (None: it can)."""
    if device != "cuda":
        return None
    import torch

    if torch.version.cuda is None:
        return f"no CUDA device: this torch ({torch.__version__}) is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False"
    return None


def step_environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    try:
        import tensorrt

        info["tensorrt"] = getattr(tensorrt, "__version__", "unknown")
    except ImportError:
        info["tensorrt"] = None
    gpu = info.get("gpu") or "no GPU"
    info["summary"] = f"torch {info['torch']}, {gpu}, onnxruntime {info['onnxruntime']}, tensorrt {info['tensorrt']}"
    return info


def _smooth_images(b: int, h: int, w: int, gen: Any) -> Any:
    """Float64 RGB images of flat colour regions plus mild noise (many similar neighbours, many dissimilar)."""
    import torch

    img = torch.empty(b, 3, h, w, dtype=torch.float64)
    for i in range(b):
        img[i] = torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) * 255
        for _ in range(4):
            y0, x0 = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
            img[i, :, y0:y0 + h // 2, x0:x0 + w // 2] = torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) * 255
    return (img + torch.rand(b, 3, h, w, generator=gen, dtype=torch.float64) * 0.6).clamp(0, 255)


def _random_boxes(n: int, h: int, w: int, gen: Any) -> Any:
    """(n,4) xyxy boxes on an h x w grid; some reach past its edges (clipping is part of what is checked)."""
    import torch

    cx = torch.rand(n, generator=gen) * w * 1.6 - 0.3 * w
    cy = torch.rand(n, generator=gen) * h * 1.6 - 0.3 * h
    bw = torch.rand(n, generator=gen) * w * 0.8 + 0.3
    bh = torch.rand(n, generator=gen) * h * 0.8 + 0.3
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)


def op_comparisons(kernel_devices: list[str]) -> list[dict[str, Any]]:
    """Each fused kernel on each of `kernel_devices` against the float64 reference (and a CUDA kernel against the
    CPU kernel in float32). One row per comparison: op, device, dtype, max_abs_diff, tol, ok."""
    import torch

    from boxseg import ops
    from boxseg.ops import _build
    from boxseg.ops import reference as R

    if _build.mode() == "reference":
        raise Skip("BOXSEG_OPS=reference turns the fused kernels off; unset it to check them")
    for kind in kernel_devices:
        _build.ensure(kind)  # a failed build raises BuildError with the compiler's message
    # From here boxseg.ops runs the fused kernel of the inputs' device (float32/float64): its public functions are
    # what training calls.
    rows: list[dict[str, Any]] = []

    def record(op: str, dev: str, dtype: Any, got: Any, ref: Any, tol: float) -> None:
        got, ref = got.detach().cpu().double(), ref.detach().cpu().double()
        diff = float((got - ref).abs().max()) if got.numel() else 0.0
        ok = got.shape == ref.shape and bool(torch.allclose(got, ref, atol=tol, rtol=tol))
        rows.append({"op": op, "device": dev, "dtype": str(dtype).replace("torch.", ""), "max_abs_diff": diff,
                     "tol": tol, "ok": ok})

    def exact(op: str, dev: str, got: Any, ref: Any) -> None:
        ok = torch.equal(got.cpu(), ref.cpu())
        rows.append({"op": op, "device": dev, "dtype": "-", "max_abs_diff": 0.0 if ok else None, "tol": 0.0,
                     "ok": ok})

    gen = torch.Generator().manual_seed(0)
    # Colour similarity (LAB, 8 dilated neighbours).
    img = _smooth_images(2, 33, 41, gen)
    sim_ref = R.color_similarity(img)
    # Pairwise loss, forward and gradient; one instance saturated (the underflow branch).
    n, h, w = 9, 37, 45
    sim = R.color_similarity(_smooth_images(2, h, w, gen))
    z = torch.randn(n, h, w, generator=gen, dtype=torch.float64) * 4
    z[0] = z[0].sign() * 300
    idx = torch.randint(0, 2, (n,), generator=gen)
    boxes = _random_boxes(n, h, w, gen)
    zr = z.clone().requires_grad_()
    pair_ref = R.pairwise_affinity_loss(zr, sim, idx, boxes)
    (pair_grad_ref,) = torch.autograd.grad(pair_ref, zr)
    # QMF + MQS fusion.
    g, fh, fw = 9, 30, 34
    gt_idx = torch.randint(0, g, (40,), generator=gen)
    probs = torch.rand(40, fh, fw, generator=gen, dtype=torch.float64) ** 0.5
    s, u = torch.rand(40, generator=gen, dtype=torch.float64), torch.rand(40, generator=gen, dtype=torch.float64)
    gt_boxes = _random_boxes(g, fh, fw, gen).double()
    fuse_ref = R.fuse_candidate_masks(probs, gt_idx, s, u, gt_boxes)
    # Class-aware NMS with score ties.
    xy = torch.rand(3000, 2, generator=gen) * 300
    nms_boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=gen) * 80 + 1], 1)
    nms_scores = (torch.rand(3000, generator=gen) * 20).round() / 20
    nms_cls = torch.randint(0, 80, (3000,), generator=gen)
    nms_ref = R.batched_nms(nms_boxes, nms_scores, nms_cls, 0.5)

    f32: dict[str, dict[str, Any]] = {}
    for dev in kernel_devices:
        for dtype, tol_sim, tol_pair, tol_fuse in ((torch.float64, 1e-10, 1e-11, 1e-12),
                                                    (torch.float32, 3e-4, 2e-5, 1e-5)):
            got_sim = ops.color_similarity(img.to(dev, dtype), 3, 2, 2.0)
            record("color_similarity", dev, dtype, got_sim, sim_ref, tol_sim)
            zc = z.to(dev, dtype).requires_grad_()
            loss = ops.pairwise_affinity_loss(zc, sim.to(dev, dtype), idx.to(dev), boxes.to(dev, dtype), 0.3, 2)
            (grad,) = torch.autograd.grad(loss, zc)
            record("pairwise_loss", dev, dtype, loss, pair_ref, tol_pair)
            record("pairwise_grad", dev, dtype, grad, pair_grad_ref, tol_pair)
            fused, weight, valid = ops.fuse_candidate_masks(
                probs.to(dev, dtype), gt_idx.to(dev), s.to(dev, dtype), u.to(dev, dtype), gt_boxes.to(dev, dtype),
                0.5)
            record("fusion_masks", dev, dtype, fused, fuse_ref[0], tol_fuse)
            record("fusion_weights", dev, dtype, weight, fuse_ref[1], tol_fuse)
            exact("fusion_valid", dev, valid, fuse_ref[2])
            if dtype == torch.float32:
                f32[dev] = {"color_similarity": got_sim, "pairwise_grad": grad, "fusion_masks": fused}
        exact("batched_nms", dev, ops.batched_nms(nms_boxes.to(dev), nms_scores.to(dev), nms_cls.to(dev), 0.5),
              nms_ref)
        # Empty inputs: no instances, no boxes.
        empty = torch.zeros(0, h, w, dtype=torch.float64, device=dev, requires_grad=True)
        loss = ops.pairwise_affinity_loss(empty, sim.to(dev), idx[:0].to(dev), boxes[:0].to(dev).double(), 0.3, 2)
        loss.backward()
        zero = float(loss.detach())
        rows.append({"op": "pairwise_empty", "device": dev, "dtype": "float64", "max_abs_diff": abs(zero),
                     "tol": 0.0, "ok": zero == 0.0 and empty.grad is not None and empty.grad.shape == empty.shape})
        kept = ops.batched_nms(nms_boxes[:0].to(dev), nms_scores[:0].to(dev), nms_cls[:0].to(dev), 0.5)
        rows.append({"op": "batched_nms_empty", "device": dev, "dtype": "-", "max_abs_diff": 0.0, "tol": 0.0,
                     "ok": kept.numel() == 0})
    if "cuda" in f32 and "cpu" in f32:  # the two kernels against each other, in float32
        for op, tol in (("color_similarity", 3e-4), ("pairwise_grad", 2e-5), ("fusion_masks", 1e-5)):
            record(op, "cuda vs cpu kernel", torch.float32, f32["cuda"][op], f32["cpu"][op], tol)
    return rows


def step_ops(device: str) -> dict[str, Any]:
    reason = cuda_reason(device)
    if reason:
        raise Skip(reason)
    kinds = ["cpu", "cuda"] if device == "cuda" else ["cpu"]
    rows = op_comparisons(kinds)
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise AssertionError("kernels differ from the reference: " + "; ".join(
            f"{r['op']} on {r['device']} ({r['dtype']}): max |diff| {r['max_abs_diff']} > {r['tol']}" for r in bad))
    return {"comparisons": rows,
            "summary": f"{len(rows)} comparisons against the float64 reference on {' and '.join(kinds)}: all within "
                       "tolerance"}


def step_bench_ops(device: str, out: Path) -> dict[str, Any]:
    reason = cuda_reason(device)
    if reason:
        raise Skip(reason)
    from boxseg.bench.ops import cli as bench_ops

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):  # its JSON is read here, not printed
            bench_ops.main(["--device", device, "--quick", "--json", "--out", str(out / "bench_ops")],
                           standalone_mode=False)
    except SystemExit as exc:  # its exit status, as a failure of this step rather than the end of the check
        if exc.code not in (0, None):
            raise AssertionError(f"boxseg bench ops exited with status {exc.code}") from None
    doc = json.loads(buf.getvalue())
    rows = [{k: r.get(k) for k in ("op", "reference_ms", "fused_ms", "speedup", "max_abs_diff")} for r in doc["rows"]]
    return {"rows": rows, "summary": "; ".join(f"{r['op']}: {r['speedup']:.1f}x" for r in rows
                                               if isinstance(r.get("speedup"), float))}


@dataclass(frozen=True)
class TrainPlan:
    iters: int
    batch: int
    size: int
    images: int
    amp: bool


def train_plan(device: str, iters: int | None) -> TrainPlan:
    """100 AMP iterations at 192 px on CUDA; 20 plain ones at 128 px on a CPU (a minute or two on two cores)."""
    if device == "cuda":
        return TrainPlan(iters or 100, 4, 192, 32, True)
    return TrainPlan(iters or 20, 2, 128, 8, False)


def step_train(device: str, out: Path, plan: TrainPlan, threads: int) -> dict[str, Any]:
    reason = cuda_reason(device)
    if reason:
        raise Skip(reason)
    from boxseg.data.synth import generate_dataset
    from boxseg.train.config import load_config, with_overrides
    from boxseg.train.loop import Trainer

    data = out / "data"
    generate_dataset(data, num_images=plan.images, size=(plan.size, plan.size), seed=0, progress=False)
    n = plan.iters
    values = {
        "data.train_dir": str(data), "runtime.out_dir": str(out / "train"), "runtime.device": device,
        "runtime.threads": threads, "runtime.progress": False, "runtime.eval_every": 0,
        "runtime.checkpoint_every": n, "runtime.log_every": n, "data.workers": 0,
        "solver.amp": plan.amp, "solver.ims_per_batch": plan.batch, "solver.max_iter": n, "solver.steps": [n + 1],
        "solver.warmup_iters": max(1, n // 10),
        "input.train_scales": [plan.size], "input.train_max_size": plan.size, "input.test_size": plan.size,
        "input.test_max_size": plan.size, "teacher.input.short": plan.size, "teacher.input.max": plan.size,
        # Every loss term from the first step; a high class prior so the short run already detects something for
        # the export comparison to compare.
        "loss.pairwise_warmup_iters": 0, "loss.mask_sup.warmup_iters": 0, "model.prior_prob": 0.3,
    }
    cfg = with_overrides(load_config("boxseg", "synthetic_cpu"), values, source="boxseg check's training run")
    start = time.perf_counter()
    result = Trainer(cfg).train()  # raises TrainingDiverged on a NaN / infinite loss
    seconds = time.perf_counter() - start
    losses = result["final_losses"]
    ckpt = Path(result["checkpoint"])
    if not ckpt.is_file():
        raise AssertionError(f"training finished but wrote no checkpoint at {ckpt}")
    # The loop's own time per iteration (metrics.jsonl, one record for the n iterations): without the set-up.
    records = [json.loads(line) for line in Path(result["metrics"]).read_text().splitlines() if line.strip()]
    per_iter = next((r["time_per_iter"] for r in reversed(records) if "time_per_iter" in r), seconds / n)
    return {"iterations": n, "batch": plan.batch, "size": plan.size, "amp": plan.amp, "seconds": seconds,
            "seconds_per_iter": per_iter, "final_loss": losses.get("total"), "checkpoint": str(ckpt),
            "summary": f"{n} iterations of boxseg (batch {plan.batch}, {plan.size} px, "
                       f"{'AMP' if plan.amp else 'fp32, no AMP'}): {per_iter:.2f} s/it, {seconds:.0f} s with the "
                       f"set-up, final loss {losses.get('total', float('nan')):.3f}"}


def _ort_session(path: Path, device: str) -> Any:
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise AssertionError("onnxruntime has no CUDAExecutionProvider (providers: "
                                 f"{ort.get_available_providers()}); install onnxruntime-gpu")
        providers = ["CUDAExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise AssertionError(f"onnxruntime did not load {providers[0]} (session providers: {session.get_providers()})")
    return session


def step_export_runtime(device: str, out: Path, ckpt: Path | None, size: int) -> dict[str, Any]:
    reason = cuda_reason(device)
    if reason:
        raise Skip(reason)
    if ckpt is None:
        raise Skip("no checkpoint: the train step did not finish")
    import numpy as np

    from boxseg.export.api import export
    from boxseg.export.images import letterbox
    from boxseg.export.source import load_student
    from boxseg.export.verify import compare_detections, sample_images, torch_runner

    onnx_path = out / "model.onnx"
    export(ckpt, "onnx", onnx_path, imgsz=(size, size), batch=2)
    model = load_student(ckpt).model
    session = _ort_session(onnx_path, device)
    names = [o.name for o in session.get_outputs()]
    images = sample_images(2, size=(size, size))
    batch = np.stack([letterbox(im, (size, size))[0] for im in images]).astype(np.float32)
    ref = torch_runner(model)(batch)
    got = dict(zip(names, session.run(None, {"images": batch})))
    report = compare_detections(ref, got, mask_threshold=float(model.cfg.mask_thresh),
                                score_threshold=float(model.cfg.score_thresh))
    if not report["passed"]:
        raise AssertionError("ONNX Runtime and PyTorch disagree: " + "; ".join(report["failures"]))
    from boxseg.runtime import Predictor

    predictor = Predictor(onnx_path, device=device)
    dets = predictor.predict_batch(list(images))
    provider = session.get_providers()[0]
    matched = report.get("matched", 0)
    return {"onnx": str(onnx_path), "provider": provider, "matched": matched,
            "box_abs_err": report["box_abs_err"], "score_abs_err": report["score_abs_err"],
            "min_mask_iou": report["min_mask_iou"], "runtime_backend": predictor.backend,
            "runtime_detections": [len(d["scores"]) for d in dets],
            "summary": f"ONNX Runtime ({provider}) matches PyTorch on {matched} detections (score error "
                       f"{report['score_abs_err']:.1e}, min mask IoU {report['min_mask_iou']:.3f}); "
                       f"boxseg.runtime ({predictor.backend}, {device}) found {[len(d['scores']) for d in dets]}"}


def step_tensorrt(device: str, out: Path, ckpt: Path | None, size: int) -> dict[str, Any]:
    if device != "cuda":
        raise Skip("TensorRT runs on CUDA devices only (boxseg check --device cuda)")
    reason = cuda_reason(device)
    if reason:
        raise Skip(reason)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Skip("tensorrt is not installed (pip install 'boxseg[tensorrt]')") from None
    if ckpt is None:
        raise Skip("no checkpoint: the train step did not finish")
    from boxseg.export.api import export

    result = export(ckpt, "tensorrt", out / "model.engine", imgsz=(size, size), batch=2, verify=True)
    ver = result.verification or {}
    if not ver.get("passed"):
        raise AssertionError(f"the TensorRT engine disagrees with PyTorch: {ver}")
    return {"engine": str(result.path), "build_seconds": result.details.get("build_seconds"),
            "precision": result.details.get("precision"),
            "summary": f"engine built ({result.details.get('precision')}) and matches PyTorch"}


# ---------------------------------------------------------------------------------------------- the check


def run_check(device: str, out: Path, iters: int | None = None, threads: int = 0,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All steps in order; the report as a plain dict (``ok`` is False when a step failed)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    out.mkdir(parents=True, exist_ok=True)
    plan = train_plan(device, iters)
    start = time.perf_counter()
    steps = [run_step("environment", lambda: step_environment(device), log),
             run_step("ops", lambda: step_ops(device), log),
             run_step("bench_ops", lambda: step_bench_ops(device, out), log)]
    train = run_step("train", lambda: step_train(device, out, plan, threads), log)
    steps.append(train)
    ckpt = Path(train.data["checkpoint"]) if train.status == "ok" else None
    steps.append(run_step("export_runtime", lambda: step_export_runtime(device, out, ckpt, plan.size), log))
    steps.append(run_step("tensorrt", lambda: step_tensorrt(device, out, ckpt, plan.size), log))
    counts = {s: sum(r.status == s for r in steps) for s in STATUSES}
    return {"device": device, "ok": counts["failed"] == 0, "counts": counts,
            "seconds": time.perf_counter() - start, "steps": [asdict(r) for r in steps]}


def check_main(device: str, as_json: bool, out_dir: str | None, iters: int | None, threads: int) -> int:
    """The CLI body: run, print (a table or one JSON object), write check.json into --out; the exit status."""
    import click

    from boxseg.bench.report import to_jsonable

    log = (lambda msg: click.echo(msg, err=True))
    with contextlib.ExitStack() as stack:
        tmp = None if out_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="boxseg-check-"))
        out = Path(out_dir or tmp)
        report = run_check(device, out, iters, threads, log)
        from boxseg.bench.machine import machine_info

        report["machine"] = machine_info()
        text = json.dumps(to_jsonable(report), indent=2, allow_nan=False)
        if out_dir:
            (out / "check.json").write_text(text + "\n")
    if as_json:
        click.echo(text)
    else:
        for step in report["steps"]:
            detail = step["detail"].splitlines()
            first = (detail[-1] if step["status"] == "failed" else detail[0]) if detail else ""
            click.echo(f"{step['name']:<15} {step['status']:<8} {step['seconds']:7.1f} s  {first}")
        c = report["counts"]
        click.echo(f"boxseg check --device {device}: {'ok' if report['ok'] else 'FAILED'} ({c['ok']} ok, "
                   f"{c['failed']} failed, {c['skipped']} skipped) in {report['seconds']:.0f} s")
    return 0 if report["ok"] else 1
