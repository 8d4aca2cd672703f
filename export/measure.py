"""Figures for the export report: export time, ONNX size, differences against PyTorch, mask-AP equality, and
ONNX Runtime CPU vs PyTorch eager CPU latency.

    python -m boxseg.export.measure --out runs/export-measure [--checkpoint CKPT] [--sizes 640 800]

Without --checkpoint it builds the default model (EfficientNet-Lite0 with its ImageNet weights, the synthetic
data's 4 classes; heads untrained) and saves it as a checkpoint first. Latency: `time.perf_counter`, warm-up
runs excluded, median of --iters runs, batch 1, square inputs, both engines with their default thread counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _median_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def default_checkpoint(path: Path, score_thresh: float) -> Path:
    import torch
    from boxseg.train.checkpoint import make_checkpoint, save_checkpoint

    from boxseg.config import config_to_dict
    from boxseg.data.shapes import CATEGORY_NAMES
    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=len(CATEGORY_NAMES), score_thresh=score_thresh)
    model = CondInst(cfg)
    ckpt = make_checkpoint(model=model, iteration=0, config={"preset": "boxinst", "model": config_to_dict(cfg)},
                           class_names=list(CATEGORY_NAMES))
    return save_checkpoint(ckpt, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--score-thresh", type=float, default=0.001,
                        help="for the default model: untrained heads score ~0.01, so keep detections flowing")
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 800])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--val-images", type=int, default=16)
    args = parser.parse_args(argv)

    import torch
    from boxseg.export.api import export
    from boxseg.export.images import letterbox
    from boxseg.export.source import load_student
    from boxseg.export.verify import mask_ap_equality, ort_runner, sample_images, verify_onnx

    from boxseg.data.synth import generate_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or default_checkpoint(args.out / "default_model.pt", args.score_thresh)
    top = max(args.sizes)
    result = export(ckpt, "onnx", args.out / "model.onnx", imgsz=(top, top))
    model = load_student(ckpt).model
    figures: dict = {"checkpoint": str(ckpt), "backbone": model.cfg.backbone,
                     "params": sum(p.numel() for p in model.parameters()),
                     "export_seconds": round(result.seconds, 1), "onnx_bytes": result.size_bytes,
                     "onnx_nodes": result.details["num_nodes"], "tensorrt_problems": result.details["tensorrt_problems"],
                     "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                                 "torch_threads": torch.get_num_threads()}}
    images = sample_images(4)
    report = verify_onnx(model, result.path, images=images, sizes=[(s, s) for s in args.sizes], batches=(1, 4))
    figures["verify"] = {k: report[k] for k in ("passed", "box_abs_err", "box_rel_err", "score_abs_err",
                                                "mask_prob_abs_err", "min_mask_iou")}
    val = args.out / "val"
    if not (val / "annotations.json").is_file():
        generate_dataset(val, num_images=args.val_images, size=(320, 320), seed=99, subset="val", progress=False)
    ap = mask_ap_equality(model, result.path, val, imgsz=(640, 640))
    figures["ap"] = {k: ap[k] for k in ("passed", "images", "segm_AP_delta", "bbox_AP_delta", "torch", "onnx")}
    run_ort = ort_runner(result.path)
    latency = []
    for size in args.sizes:
        x = letterbox(images[0], (size, size))[0][None]
        xt = torch.from_numpy(x)
        with torch.no_grad():
            torch_ms = _median_ms(lambda xt=xt: model.inference(xt), args.warmup, args.iters)
        ort_ms = _median_ms(lambda x=x: run_ort(x), args.warmup, args.iters)
        latency.append({"size": size, "torch_eager_ms": round(torch_ms, 1), "ort_cpu_ms": round(ort_ms, 1),
                        "speedup": round(torch_ms / ort_ms, 2)})
    figures["latency_batch1"] = latency
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
