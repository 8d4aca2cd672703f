"""Export the student's whole inference path to one ONNX graph (torch.onnx dynamo exporter, opset 18 default).

Graph contract (docs/contracts.md, "Exported ONNX graph"): input `images` float32 (B, 3, H, W) RGB 0..255 with
H, W multiples of 32 and B, H, W dynamic; outputs `boxes` (B, D, 4), `scores` (B, D), `classes` (B, D) int64,
`masks` (B, D, H/4, W/4) probabilities, `num_dets` (B,) int64, with D = max detections fixed; `boxseg.*`
metadata. Export uses the dynamo exporter; NMS goes through a custom op translated to NonMaxSuppression (nms.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from boxseg.export.atomic import atomic_outputs
from boxseg.export.errors import ExportError
from boxseg.export.graph import OUTPUT_NAMES, ExportModule
from boxseg.export.metadata import set_onnx_metadata
from boxseg.export.nms import translation_table

from boxseg.contract import SIZE_DIVISOR

INPUT_NAME = "images"
OPSET_RANGE = (18, 23)  # the dynamo exporter starts at 18; ONNX Runtime 1.31 and TensorRT 10 parse up to 23/24
MAX_SIDE = 4096
MAX_BATCH = 1024


@dataclass
class OnnxExportInfo:
    seconds: float  # torch.export + ONNX translation + post-processing + checks, not counting the file write
    opset: int
    dynamic: bool
    max_dets: int
    min_side: int  # smallest H and W the dynamic graph accepts
    num_nodes: int
    op_counts: dict[str, int] = field(default_factory=dict)
    tensorrt_problems: list[str] = field(default_factory=list)


def num_locations(h: int, w: int, strides=(8, 16, 32, 64, 128)) -> int:
    """FPN locations of an H x W input (H, W multiples of 32; P6/P7 are stride-2 convs: ceil halving)."""
    total, hh, ww = 0, h, w
    for s in strides:
        if s <= 32:
            hh, ww = h // s, w // s
        else:
            hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
        total += hh * ww
    return total


def min_side_for(model_cfg, max_dets: int) -> int:
    """Smallest square side (multiple of 32, >= 64) whose candidate count reaches max_dets, so that every
    accepted input fills all D detection slots with candidates and D is a constant of the graph."""
    side = 2 * SIZE_DIVISOR
    while num_locations(side, side, model_cfg.strides) * model_cfg.num_classes < max_dets:
        side += SIZE_DIVISOR
    return side


def validate_export_args(model_cfg, *, opset: int, batch: int, imgsz: tuple[int, int], max_dets: int) -> None:
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ExportError(f"--opset {opset}: supported opsets are {OPSET_RANGE[0]}..{OPSET_RANGE[1]}.")
    if not 1 <= batch <= MAX_BATCH:
        raise ExportError(f"--batch {batch}: expected 1..{MAX_BATCH}.")
    if len(imgsz) != 2 or any(s % SIZE_DIVISOR or not 64 <= s <= MAX_SIDE for s in imgsz):
        raise ExportError(f"--imgsz {tuple(imgsz)}: expected H W, each a multiple of {SIZE_DIVISOR} in 64..{MAX_SIDE}.")
    if not 1 <= max_dets <= model_cfg.pre_nms_topk:
        raise ExportError(f"--max-dets {max_dets}: expected 1..{model_cfg.pre_nms_topk} (the model's pre-NMS top-k, "
                          "model.pre_nms_topk).")
    need = min_side_for(model_cfg, max_dets)
    if min(imgsz) < need:
        raise ExportError(f"--imgsz {tuple(imgsz)}: with {model_cfg.num_classes} class(es) and --max-dets "
                          f"{max_dets} the input must be at least {need}x{need}.")


def _dynamic_shapes(min_side: int):
    from torch.export import Dim

    lo = min_side // SIZE_DIVISOR
    hi = MAX_SIDE // SIZE_DIVISOR
    batch = Dim("batch", min=1, max=MAX_BATCH)
    return {"images": {0: batch, 2: SIZE_DIVISOR * Dim("h32", min=lo, max=hi),
                       3: SIZE_DIVISOR * Dim("w32", min=lo, max=hi)}}


def _tidy(model_proto, *, max_dets: int, dynamic: bool) -> None:
    """Readable IO dims, a constant D, and no per-node debug metadata (it holds local file paths)."""
    for node in model_proto.graph.node:
        del node.metadata_props[:]
    if not dynamic:
        return
    names = {
        INPUT_NAME: ["batch", None, "height", "width"],
        "boxes": ["batch", max_dets, None], "scores": ["batch", max_dets], "classes": ["batch", max_dets],
        "masks": ["batch", max_dets, "height/4", "width/4"], "num_dets": ["batch"],
    }
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, new in zip(dims, names.get(value.name, [])):
            if isinstance(new, int):
                dim.ClearField("dim_param")
                dim.dim_value = new
            elif isinstance(new, str):
                dim.ClearField("dim_value")
                dim.dim_param = new


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress to stdout; `--json` needs stdout for the one JSON object."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def build_onnx_model(model: torch.nn.Module, *, opset: int = 18, dynamic: bool = True, batch: int = 1,
                     imgsz: tuple[int, int] = (640, 640), max_dets: int | None = None,
                     metadata: dict[str, str] | None = None):
    """Export `model` (a CondInst) and return (onnx.ModelProto, OnnxExportInfo without path/size)."""
    import onnx

    cfg = model.cfg
    max_dets = int(cfg.max_dets if max_dets is None else max_dets)
    validate_export_args(cfg, opset=opset, batch=batch, imgsz=tuple(imgsz), max_dets=max_dets)
    module = ExportModule(model, max_dets).eval()
    min_side = min_side_for(cfg, max_dets) if dynamic else min(imgsz)
    # The trace example of a dynamic graph is chosen to be generic: torch.export specialises example sizes of 1
    # (so batch 2), and records assumptions such as "H != W" or "P7 is wider than 1" from the example as
    # runtime asserts that ONNX drops; a non-square example with every FPN level > 1 keeps those assumptions
    # from being tied to a particular canvas (the tests check sizes down to the minimum).
    if dynamic:
        side = max(min_side, 320)
        example_shape = (max(2, batch), 3, side, side + 3 * SIZE_DIVISOR)
    else:
        example_shape = (batch, 3, imgsz[0], imgsz[1])
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(*example_shape, generator=gen) * 255
    start = time.perf_counter()
    try:
        with _quiet_exporter(), torch.no_grad():
            # torch.export first, so that a shape specialisation is an error here instead of torch.onnx quietly
            # "refining" the dynamic dims into constants and retrying.
            exported = torch.export.export(module, (example,), dynamic_shapes=_dynamic_shapes(min_side) if dynamic
                                           else None, strict=False, prefer_deferred_runtime_asserts_over_guards=True)
            program = torch.onnx.export(
                exported, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), custom_translation_table=translation_table(), verbose=False,
                optimize=True,
            )
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types; keep the cause chained
        raise ExportError(f"torch.onnx.export failed for the student model: {type(exc).__name__}: "
                          f"{str(exc)[:2000]}") from exc
    proto = program.model_proto
    _tidy(proto, max_dets=max_dets, dynamic=dynamic)
    proto.doc_string = "BoxSeg student (CondInst): whole inference path incl. NMS and the dynamic mask head."
    proto.producer_name = "boxseg"
    if metadata:
        set_onnx_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    from boxseg.export.trt_support import check_tensorrt_support

    problems = [str(p) for p in check_tensorrt_support(proto)]
    seconds = time.perf_counter() - start
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    info = OnnxExportInfo(seconds=seconds, opset=opset, dynamic=dynamic,
                          max_dets=max_dets, min_side=min_side, num_nodes=len(proto.graph.node),
                          op_counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])), tensorrt_problems=problems)
    return proto, info


def _predictor_metadata(source) -> dict[str, str]:
    """What the runtime needs to reproduce the PyTorch predictor: its resize rule and the COCO category ids."""
    meta: dict[str, str] = {}
    inp = (source.config or {}).get("input") or {}
    if "test_size" in inp and "test_max_size" in inp:
        meta["test_size"] = str(int(inp["test_size"]))
        meta["test_max_size"] = str(int(inp["test_max_size"]))
    if source.cat_ids:
        meta["cat_ids"] = json.dumps(source.cat_ids)
    return meta


def export_onnx_file(source, out: Path, opts):
    """Format-table entry for `onnx`: metadata, export, optional verification, atomic write."""
    import onnx
    from boxseg.export.metadata import build_metadata
    from boxseg.export.options import ExportResult

    model = source.model
    cfg = model.cfg
    max_dets = int(cfg.max_dets if opts.max_dets is None else opts.max_dets)
    meta = build_metadata(class_names=source.class_names, mean=cfg.mean, std=cfg.std, max_dets=max_dets,
                          preset=source.preset, mask_threshold=cfg.mask_thresh,
                          extra={"score_threshold": repr(float(cfg.score_thresh)),
                                 "nms_threshold": repr(float(cfg.nms_thresh)),
                                 "pre_nms_topk": str(int(cfg.pre_nms_topk)),
                                 "opset": str(opts.opset), "dynamic": str(opts.dynamic).lower(),
                                 "iteration": str(source.iteration), **_predictor_metadata(source)})
    proto, info = build_onnx_model(model, opset=opts.opset, dynamic=opts.dynamic, batch=opts.batch,
                                   imgsz=tuple(opts.imgsz), max_dets=max_dets, metadata=None)
    meta["boxseg.min_size"] = str(info.min_side)
    from boxseg.export.quantize import finish_graph

    proto, added, finish_details = finish_graph(proto, opts, meta)  # clean-up, then int8/fp16 (opts)
    meta.update(added)
    set_onnx_metadata(proto, meta)
    verification = None
    with atomic_outputs(out) as (tmp,):
        onnx.save_model(proto, str(tmp))
        if opts.verify:
            verification = verify_for_export(model, tmp, opts, info)
            if not verification["passed"]:
                raise ExportError("--verify failed; nothing was written:\n  " +
                                  "\n  ".join(_failures(verification)))
    details = {"export_seconds": info.seconds, "opset": info.opset, "dynamic": info.dynamic,
               "num_nodes": info.num_nodes, "op_counts": info.op_counts, "min_side": info.min_side,
               "tensorrt_problems": info.tensorrt_problems, "exporter": "torch.onnx.export(dynamo=True)",
               **finish_details}
    return ExportResult(format="onnx", path=out, files=[out], seconds=info.seconds, size_bytes=out.stat().st_size,
                        metadata=meta, details=details, verification=verification)


def verification_sizes(opts, min_side: int) -> list[tuple[int, int]]:
    """The input sizes --verify tests: the export size and, for a dynamic graph, a smaller non-square one."""
    h, w = opts.imgsz
    if not opts.dynamic:
        return [(h, w)]
    small = (max(min_side, (h * 3 // 4) // SIZE_DIVISOR * SIZE_DIVISOR),
             max(min_side, (w // 2) // SIZE_DIVISOR * SIZE_DIVISOR))
    return [(h, w), small]


def verify_for_export(model, path: Path, opts, info: OnnxExportInfo, runner=None, max_batch: int | None = None
                      ) -> dict:
    """--verify: batch 1 and 4 (or up to `max_batch`, a TensorRT profile's limit) at `verification_sizes`, with
    the tolerances of the artefact's precision (--half: fp16, --int8: int8) against the fp32 PyTorch model."""
    from boxseg.export.quantize import precision_of
    from boxseg.export.verify import sample_images, tolerances_for, verify_onnx

    images = sample_images(4, folder=opts.verify_data)
    batches = tuple(sorted({1, min(4, max_batch or 4)})) if opts.dynamic else (opts.batch,)
    report = verify_onnx(model, path, images=images, sizes=verification_sizes(opts, info.min_side),
                         batches=batches, max_dets=info.max_dets, runner=runner,
                         tol=tolerances_for(precision_of(opts)), precision=precision_of(opts))
    if info.tensorrt_problems:
        report["passed"] = False
        report.setdefault("failures", []).extend(info.tensorrt_problems)
    return report


def _failures(report: dict) -> list[str]:
    lines = list(report.get("failures", []))
    for case in report.get("cases", []):
        lines += [f"batch {case['batch']} size {case['size']}: {f}" for f in case.get("failures", [])]
    return lines[:20] or ["(no details)"]
