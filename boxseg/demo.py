"""`boxseg demo`: the main job end to end on built-in synthetic data.

Stages, in order (each uses the other parts' Python APIs; none is re-implemented here):

  data       synthetic COCO train/val folders                 boxseg.data.synth.generate_bench
  baselines  mask AP of box-fill and ellipse masks on val     boxseg.eval.baselines
  train      the preset (default ``boxseg``), briefly, on CPU boxseg.train.loop.Trainer
  eval       mask and box AP of the trained student on val    boxseg.eval.predict.evaluate_checkpoint
  label      masks for the val boxes, scored against GT       boxseg.train.label, boxseg.eval.labels
  export     ONNX with verification against PyTorch           boxseg.export.api.export
  predict    the runtime on the val images: overlays + AP     boxseg.runtime.Predictor
  bench      latency of torch / ONNX Runtime / the runtime    boxseg.bench.latency

The stages run in order, each on the results of the ones before; the first stage that raises stops the demo
("failed", with its traceback in OUT/logs/<stage>.err; later ones "not run").

Budget (2 CPU cores): the default plan finishes in under 10 minutes, ``quick`` in under 2. The default plan is
the CPU protocol of `boxseg bench ablation` (docs/method.md "CPU protocol") for one seed: the bench split at
192 px, the preset with the ``synthetic_cpu`` overlay, its 800-iteration schedule. ``--iters`` (and ``quick``)
scale that schedule's steps and warm-ups to the iteration count.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS_OK, STATUS_FAILED, STATUS_NOT_RUN = "ok", "failed", "not run"

# The shipped overlay that sizes any preset (COCO recipe) for the synthetic data on a small CPU: a slimmer head
# on the same pretrained EfficientNet-Lite0, an 800-iteration schedule, smaller teacher and test sizes.
DEMO_OVERLAY = "synthetic_cpu"
OVERLAY_SCORE = 0.3  # detections drawn on the overlay PNGs (the same default as `boxseg predict`)


@dataclass(frozen=True)
class DemoPlan:
    """How much work each stage does."""

    train_images: int
    val_images: int
    size: int  # square images; training scales size-32..size+32, test size = size
    iters: int
    batch: int
    bench_iters: int
    bench_warmup: int
    overlays: int  # overlay PNGs written by the predict stage (AP always uses every val image)


FULL = DemoPlan(train_images=600, val_images=150, size=192, iters=800, batch=4, bench_iters=30, bench_warmup=5,
                overlays=12)
QUICK = DemoPlan(train_images=24, val_images=8, size=192, iters=20, batch=4, bench_iters=5, bench_warmup=1,
                 overlays=8)


@dataclass
class DemoSettings:
    out_dir: Path = Path("runs/demo")
    quick: bool = False
    iters: int | None = None  # overrides the plan's iteration count
    device: str = "cpu"
    threads: int = 0  # torch intra-op / runtime threads; 0 = the cores this process may use
    preset: str = "boxseg"
    config: str | None = DEMO_OVERLAY  # overlay YAML (file or shipped name) applied over the preset
    overrides: tuple[str, ...] = ()  # extra training-config overrides (key=value), applied last
    seed: int = 0

    @property
    def plan(self) -> DemoPlan:
        base = QUICK if self.quick else FULL
        return dataclasses.replace(base, iters=self.iters) if self.iters else base

    def resolved_threads(self) -> int:
        from boxseg.bench.machine import usable_cores

        return self.threads if self.threads > 0 else usable_cores()


@dataclass
class StageResult:
    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[DemoContext], dict[str, Any]]  # reads earlier stages' outputs through the context


@dataclass
class DemoContext:
    settings: DemoSettings
    log: Callable[[str], None]
    results: dict[str, StageResult] = field(default_factory=dict)
    artefacts: dict[str, str] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.settings.out_dir)

    @property
    def plan(self) -> DemoPlan:
        return self.settings.plan

    def earlier(self, stage: str) -> dict[str, Any]:
        """The outputs of an earlier stage, for the stages (it succeeded: the demo stops at the first failure)."""
        return self.results[stage].outputs

    def output(self, stage: str) -> dict[str, Any] | None:
        """The outputs of a stage that succeeded, None otherwise (for the summary)."""
        r = self.results.get(stage)
        return r.outputs if r is not None and r.status == STATUS_OK else None


# ---------------------------------------------------------------------------------------------- helpers


def _val_dir(ctx: DemoContext) -> Path:
    return Path(ctx.earlier("data")["val"])


def _segm(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics["segm"].get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


# ---------------------------------------------------------------------------------------------- stages


def stage_data(ctx: DemoContext) -> dict[str, Any]:
    from boxseg.data import synth

    p = ctx.plan
    root = ctx.out / "data"
    ctx.log(f"writing {p.train_images} train + {p.val_images} val synthetic images ({p.size}x{p.size}) to {root}")
    summary = synth.generate_bench(root, split="easy", seed=ctx.settings.seed, size=(p.size, p.size),
                                   num_train=p.train_images, num_val=p.val_images)
    ctx.artefacts["data"] = str(root)
    subsets = summary["subsets"]
    return {"train": str(root / "train"), "val": str(root / "val"),
            "train_images": subsets["train"]["images"], "val_images": subsets["val"]["images"],
            "instances": subsets["train"]["instances"] + subsets["val"]["instances"]}


def stage_baselines(ctx: DemoContext) -> dict[str, Any]:
    from boxseg.eval import baselines, coco_eval

    gt = _val_dir(ctx) / "annotations.json"
    out: dict[str, Any] = {}
    for kind in baselines.BASELINES:
        out[kind] = coco_eval.evaluate(gt, baselines.baseline_results(gt, kind))
        ctx.log(f"{kind}: mask AP {out[kind]['segm']['AP']:.1f}")
    return out


def train_config(ctx: DemoContext) -> Any:
    """The preset, the overlay, then the demo's data, size, schedule and threads, then the user's overrides."""
    from boxseg.train.config import apply_override, load_config, with_overrides
    from boxseg.train.schedule import scale_schedule

    s, p = ctx.settings, ctx.plan
    cfg = with_overrides(load_config(s.preset, s.config), {
        "data.train_dir": ctx.earlier("data")["train"], "data.workers": 0,
        "runtime.out_dir": str(ctx.out / "train"), "runtime.device": s.device,
        "runtime.threads": s.resolved_threads(), "runtime.seed": s.seed, "runtime.checkpoint_every": 0,
        "runtime.eval_every": 0, "runtime.progress": True, "runtime.log_every": 10,
        "solver.ims_per_batch": p.batch,
        "input.train_scales": [v for v in (p.size - 32, p.size, p.size + 32) if v >= 64],
        "input.train_max_size": 2 * p.size, "input.test_size": p.size, "input.test_max_size": 2 * p.size,
        # The teacher's view follows the demo's image size (the presets' teacher sizes are for larger images).
        "teacher.input.short": p.size, "teacher.input.max": 2 * p.size,
    }, source="the demo's settings")
    cfg = scale_schedule(cfg, p.iters)
    for item in s.overrides:
        cfg = apply_override(cfg, item)
    return cfg


def stage_train(ctx: DemoContext) -> dict[str, Any]:
    from boxseg.train.loop import Trainer

    cfg = train_config(ctx)
    ctx.log(f"training preset '{ctx.settings.preset}' for {cfg.solver.max_iter} iterations, batch "
            f"{cfg.solver.ims_per_batch}, {cfg.model.backbone} (pretrained={cfg.model.pretrained}), "
            f"{cfg.runtime.threads} thread(s)")
    summary = Trainer(cfg).train()
    ctx.artefacts["checkpoint"] = summary["checkpoint"]
    ctx.artefacts["train_metrics"] = summary["metrics"]
    return {"checkpoint": summary["checkpoint"], "iterations": summary["iterations"],
            "final_losses": summary["final_losses"], "preset": ctx.settings.preset}


def stage_eval(ctx: DemoContext) -> dict[str, Any]:
    """The student's mask and box AP, and the ellipse drawn in the student's own boxes: mask AP above that means
    the masks are better than the detections alone would give."""
    from boxseg.data.coco import CocoDataset
    from boxseg.eval.baselines import masks_in_predicted_boxes
    from boxseg.eval.coco_eval import evaluate as coco_evaluate
    from boxseg.eval.predict import checkpoint_model, predict_dataset

    model, cfg, _ = checkpoint_model(ctx.earlier("train")["checkpoint"], ctx.settings.device)
    dataset = CocoDataset(_val_dir(ctx))
    results = predict_dataset(model, dataset, ctx.settings.device, input_cfg=cfg.input)
    metrics = coco_evaluate(dataset.ann_file, results)
    own = coco_evaluate(dataset.ann_file, masks_in_predicted_boxes(results, dataset.ann_file, "ellipse"))
    ctx.log(f"student: mask AP {metrics['segm']['AP']:.1f}, box AP {metrics['bbox']['AP']:.1f}; ellipse in the "
            f"student's boxes: mask AP {own['segm']['AP']:.1f}")
    return {**metrics, "ellipse_in_own_boxes": own}


def stage_label(ctx: DemoContext) -> dict[str, Any]:
    """`boxseg label` of the val split with the trained checkpoint (QAM through its EMA teacher when it has one),
    scored against the val GT masks: the masks' mean IoU and how well their quality w ranks them."""
    from boxseg.eval.labels import evaluate_labels
    from boxseg.train.label import LabelOptions, label_dataset

    ckpt = ctx.earlier("train")["checkpoint"]
    out = ctx.out / "labels"
    label_dataset(_val_dir(ctx), out, ckpt, LabelOptions(device=ctx.settings.device), overwrite=True,
                  progress=False)
    result = evaluate_labels(_val_dir(ctx), out / "annotations.json", mask_ap=False)
    ctx.artefacts["labels"] = str(out / "annotations.json")
    miou, rho = result["miou"], result["spearman_w_iou"]
    ctx.log(f"labels of the val boxes: mean IoU {'-' if miou is None else f'{miou:.3f}'} over {result['valid']} "
            f"valid masks of {result['annotations']}, Spearman(w, IoU) {'-' if rho is None else f'{rho:.3f}'}")
    return {"miou": miou, "valid": result["valid"], "annotations": result["annotations"],
            "miou_all": result["miou_all"], "spearman_w_iou": rho}


def stage_export(ctx: DemoContext) -> dict[str, Any]:
    from boxseg.export import api

    ckpt = ctx.earlier("train")["checkpoint"]
    size = ctx.plan.size
    out = ctx.out / "export" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx.log(f"exporting {ckpt} to ONNX with --verify against PyTorch")
    result = api.export(ckpt, "onnx", out, verify=True, imgsz=(size, size),
                        verify_data=_val_dir(ctx) / "images")
    ver = result.verification or {}
    ctx.artefacts["onnx"] = str(result.path)
    return {"path": str(result.path), "size_mb": result.size_bytes / 2**20, "seconds": result.seconds,
            "verified": bool(ver.get("passed")), "verification": ver}


def stage_predict(ctx: DemoContext) -> dict[str, Any]:
    from boxseg import runtime
    from boxseg.data.coco import CocoDataset
    from boxseg.data.visualize import draw_instances
    from boxseg.eval import coco_eval
    from boxseg.eval import results as results_mod

    predictor = runtime.Predictor(ctx.earlier("export")["path"], device="cpu",
                                  threads=ctx.settings.resolved_threads(),
                                  model_resize=True)  # the PyTorch eval stage's resize rule
    dataset = CocoDataset(_val_dir(ctx))
    out = ctx.out / "predict"
    out.mkdir(parents=True, exist_ok=True)
    detections: list[dict] = []
    infer_ms: list[float] = []
    for i in range(len(dataset)):
        image = dataset.load_image(i)
        pred = predictor(image)
        infer_ms.append(float(predictor.last_timings["end_to_end_ms"]))
        detections.extend(results_mod.instances_to_coco(dataset.image_ids[i], pred["boxes"], pred["scores"],
                                                        pred["classes"], pred["masks"], dataset.cat_ids))
        if i < ctx.plan.overlays:
            name = Path(dataset.image_info(i)["file_name"]).stem
            keep = pred["scores"] >= OVERLAY_SCORE  # AP uses every detection; the picture only confident ones
            draw_instances(image, pred["boxes"][keep], pred["classes"][keep], pred["scores"][keep],
                           pred["masks"][keep], predictor.class_names).save(out / f"{name}.png")
    (out / "results.json").write_text(json.dumps(detections))
    metrics = coco_eval.evaluate(dataset.ann_file, detections)
    ctx.log(f"runtime on {len(dataset)} images: mask AP {metrics['segm']['AP']:.1f}, "
            f"median {sorted(infer_ms)[len(infer_ms) // 2]:.1f} ms/image")
    ctx.artefacts["overlays"] = str(out)
    ctx.artefacts["predictions"] = str(out / "results.json")
    return {"metrics": metrics, "images": len(dataset), "instances": len(detections),
            "overlays": min(len(dataset), ctx.plan.overlays), "median_ms": sorted(infer_ms)[len(infer_ms) // 2]}


def stage_bench(ctx: DemoContext) -> dict[str, Any]:
    from boxseg.bench import latency, report

    p, threads = ctx.plan, ctx.settings.resolved_threads()
    ckpt, onnx_path = ctx.earlier("train")["checkpoint"], ctx.earlier("export")["path"]
    rows = latency.run_latency([Path(ckpt)], ["torch"], [p.size], [1], p.bench_iters, p.bench_warmup, threads,
                               log=ctx.log)
    rows += latency.run_latency([Path(onnx_path)], ["ort", "runtime"], [p.size], [1], p.bench_iters,
                                p.bench_warmup, threads, log=ctx.log)
    out = ctx.out / "bench"
    meta = {"model": onnx_path, "imgsz": [p.size], "batch": [1],
            "iters": p.bench_iters, "warmup": p.bench_warmup, "threads": threads, "keys": latency.KEYS,
            "source": "boxseg demo"}
    report.write_report("latency", rows, out, meta, latency.PLOT, summary=latency.summarize_targets(rows),
                        columns=latency.TABLE_COLUMNS, headers=latency.TABLE_HEADERS)
    ctx.artefacts["latency_report"] = str(out / "latency.md")
    ctx.artefacts["latency_plot"] = str(out / "latency.png")
    return {"rows": [{k: r.get(k) for k in ("backend", "status", "p50_ms", "img_s", "pre_ms", "infer_ms",
                                            "post_ms")} for r in rows]}


STAGES: tuple[Stage, ...] = (
    Stage("data", "synthetic data", stage_data),
    Stage("baselines", "box-fill / ellipse baselines", stage_baselines),
    Stage("train", "train", stage_train),
    Stage("eval", "evaluate the student", stage_eval),
    Stage("label", "label the val boxes", stage_label),
    Stage("export", "export ONNX + verify", stage_export),
    Stage("predict", "runtime predict + overlays", stage_predict),
    Stage("bench", "latency bench", stage_bench),
)


# ---------------------------------------------------------------------------------------------- runner


def run_demo(settings: DemoSettings, log: Callable[[str], None] | None = None,
             stages: tuple[Stage, ...] | None = None) -> dict[str, Any]:
    """Run every stage (default: :data:`STAGES`); return the summary (also written to ``OUT/summary.json``).
    Never raises for a stage failure: the summary's ``ok`` is False and ``failed_stage`` names it."""
    stages = STAGES if stages is None else stages
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    settings.out_dir = Path(settings.out_dir)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(settings, log=lambda msg: say(f"    {msg}"))
    start = time.perf_counter()
    failed: str | None = None
    n = len(stages)
    for k, stage in enumerate(stages, 1):
        head = f"[{k}/{n}] {stage.name}"
        if failed is not None:
            ctx.results[stage.name] = StageResult(stage.name, STATUS_NOT_RUN, detail=f"after '{failed}' failed")
            continue
        say(f"{head}: {stage.title} ...")
        t0 = time.perf_counter()
        try:
            result = StageResult(stage.name, STATUS_OK, outputs=stage.run(ctx))
        except Exception as exc:  # noqa: BLE001 - a failing stage ends the demo with its name, not a traceback
            tb = traceback.format_exc()
            log_path = settings.out_dir / "logs" / f"{stage.name}.err"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(tb)
            result = StageResult(stage.name, STATUS_FAILED, detail=f"{type(exc).__name__}: {exc} (traceback: "
                                                                   f"{log_path})")
            failed = stage.name
        result.seconds = time.perf_counter() - t0
        ctx.results[stage.name] = result
        tail = f" ({result.detail})" if result.detail else ""
        say(f"{head}: {result.status} in {result.seconds:.1f} s{tail}")
    summary = build_summary(ctx, time.perf_counter() - start, failed)
    from boxseg.tempfiles import write_atomic

    write_atomic(settings.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def build_summary(ctx: DemoContext, seconds: float, failed: str | None) -> dict[str, Any]:
    s, p = ctx.settings, ctx.plan
    ap: dict[str, Any] = {}
    if (ev := ctx.output("eval")) is not None:
        ap[f"{s.preset} (PyTorch)"] = _segm(ev)
        if "ellipse_in_own_boxes" in ev:
            ap[f"ellipse in the {s.preset} student's boxes"] = _segm(ev["ellipse_in_own_boxes"])
    if (pr := ctx.output("predict")) is not None:
        ap[f"{s.preset} (runtime, ONNX)"] = _segm(pr["metrics"])
    for kind, metrics in (ctx.output("baselines") or {}).items():
        ap[f"{kind} in the GT boxes"] = _segm(metrics)
    artefacts = dict(ctx.artefacts)
    artefacts["summary"] = str(ctx.out / "summary.json")
    return {
        "ok": failed is None,
        "failed_stage": failed,
        "seconds": round(seconds, 3),
        "out_dir": str(ctx.out),
        "settings": {"quick": s.quick, "preset": s.preset, "device": s.device, "threads": s.resolved_threads(),
                     "seed": s.seed, "config": s.config, "overrides": list(s.overrides),
                     "plan": dataclasses.asdict(p)},
        "stages": [r.to_dict() for r in ctx.results.values()],
        "mask_ap": ap,
        "export": {k: v for k, v in (ctx.output("export") or {}).items() if k != "verification"} or None,
        "latency": (ctx.output("bench") or {}).get("rows"),
        "labels": ctx.output("label"),
        "artefacts": artefacts,
    }
