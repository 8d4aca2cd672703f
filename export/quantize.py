"""int8 (static QDQ, ONNX Runtime) and fp16 versions of the exported fp32 graph.

int8: `onnxruntime.quantization.quantize_static` in QDQ format with per-channel weights, calibrated (MinMax) on
images prepared the way the runtime feeds the graph (the model's own resize rule, `boxseg.contract.plan_resize`,
then zero padding to a multiple of 32); int8 weights, uint8 activations. Conv nodes with constant weights are
quantized, chosen by the module their weight belongs to (the exporter names every weight initializer by its module
path, e.g. `model.head.cls_tower.0.0.weight`): the dynamic mask head (per-instance MatMuls whose weights are the
controller's outputs) and every node from NonMaxSuppression on stay float, and `KEEP_FLOAT_SCOPES` (none by
default) keeps further modules float. The cheap ops between two quantized Convs (`GLUE_OP_TYPES`: activations,
residual Adds, FPN upsampling) are quantized with them, so ONNX Runtime runs the chain in uint8 end to end.

fp16: `onnxruntime.transformers.float16.convert_float_to_float16` with fp32 inputs and outputs (the runtime's
dtypes), blocking the ops whose fp16 result is wrong or unsupported (index/NMS ops, normalisation statistics).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from boxseg.export.errors import ExportError

from boxseg.contract import SIZE_DIVISOR, fit_size, pad_to, plan_resize

DEFAULT_CALIB_IMAGES = 64
QUANT_OP_TYPES = ("Conv",)
# Modules whose Convs stay float in int8 exports (module paths or fnmatch patterns); none by default. Measured on
# the EfficientNet-Lite0 student (192-px synthetic val split, mask AP; fp32 33.09). Int8 activations, only Convs
# quantized: all int8 30.40, mask branch + controller float 30.46, + backbone stem float 32.39. Uint8 activations
# with the glue ops quantized: all int8 32.82, stem float 32.83, stem + mask branch + controller float 32.97, at
# 1.90x, 1.82-1.91x and 1.55x the speed of fp32 (640x640 b1, 2 threads; the controller's stride-8 conv and the
# mask branch's stride-8/4 convs are the largest convs of the graph). All int8 also had the smallest --verify
# errors (worst score error 0.15 vs 0.32 with the stem float). The stem's input needs no float: its uint8
# quantization of the normalised pixels ((x - 127) / 128, calibrated scale 1/128, zero point 127) is exact.
KEEP_FLOAT_SCOPES: tuple[str, ...] = ()
# Ops between quantized Convs that are quantized too, so ONNX Runtime keeps the tensor in uint8 from one QLinearConv
# to the next instead of dequantizing, running the op in float and requantizing (measured: the dequantize and
# requantize around the float ReLU6 after the first expand conv took longer than that conv). Relu/Clip share their
# output's scale with their input and ORT then drops them; Add/Concat become QLinearAdd/QLinearConcat; Resize and
# MaxPool run on uint8 directly.
GLUE_OP_TYPES = ("Clip", "Relu", "Add", "Concat", "Resize", "MaxPool")
ACTIVATION_OPS = ("Clip", "Relu")
# uint8 activations, int8 weights: ORT's x86 kernels (QLinearConv via MLAS, VNNI where present) want u8 activations;
# with int8 activations it converts each Q/DQ pair to uint8 (QDQS8ToU8Transformer) but not the pairs it cannot, and
# a Conv left with uint8 input and int8 output (or int8 both) is not fused: it runs as a float Conv on
# dequantized weights. Measured: 36 of 85 Convs fused with int8 activations, 85 of 85 with uint8.
ACTIVATION_TYPE = "QUInt8"
# Ops the fp16 graph keeps in fp32: ORT's default block list (NMS, TopK, Range, Min/Max, ...) plus the ones whose
# fp16 result drifts: normalisation statistics (GroupNorm's variance over a whole group overflows/rounds in fp16)
# and the exp/box decoding that turns stride-scaled distances into pixel coordinates.
FP16_EXTRA_BLOCK_OPS = ("InstanceNormalization", "Exp", "NonMaxSuppression", "TopK", "GatherElements", "GatherND",
                        "ScatterND", "Resize")


@dataclass
class QuantizeReport:
    precision: str  # "int8" or "fp16"
    method: str  # what was done, in words
    op_types: list[str] = field(default_factory=list)  # op types converted
    nodes_quantized: int = 0  # nodes of those op types converted
    nodes_float: int = 0  # nodes of those op types kept float
    glue_quantized: dict[str, int] = field(default_factory=dict)  # ops between quantized Convs, by type (GLUE_OP_TYPES)
    activation_type: str = ""  # "QUInt8" / "QInt8"
    kept_float_scopes: list[str] = field(default_factory=list)
    calib_images: int = 0
    calib_method: str = ""
    calib_size: list[int] = field(default_factory=list)  # distinct (H, W) of the calibration inputs
    seconds: float = 0.0

    def to_metadata(self) -> dict[str, str]:
        import json

        meta = {"boxseg.precision": self.precision, "boxseg.quantization": json.dumps(
            {k: v for k, v in asdict(self).items() if k not in ("precision", "seconds")}, sort_keys=True)}
        return meta


# ---------------------------------------------------------------------------------------------- graph structure


def weight_scope(node, initializers: set[str]) -> str | None:
    """The module path of a Conv/MatMul/Gemm's constant weight (`model.fpn.p6` for `model.fpn.p6.weight`), or
    None when the weight is computed in the graph (the dynamic mask head)."""
    if len(node.input) < 2 or node.input[1] not in initializers:
        return None
    name = node.input[1]
    return name.removesuffix(".weight")


def downstream_nodes(proto, op_type: str = "NonMaxSuppression") -> set[str]:
    """Names of the nodes of `op_type` and of every node that (transitively) reads their outputs."""
    graph = proto.graph
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(i)
    todo = [i for i, n in enumerate(graph.node) if n.op_type == op_type]
    seen = set(todo)
    while todo:
        for out in graph.node[todo.pop()].output:
            for j in readers.get(out, []):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
    return {graph.node[i].name for i in seen}


def _in_scope(scope: str | None, scopes: Iterable[str]) -> bool:
    """`scope` is one of `scopes` or inside one (`model.fpn` holds `model.fpn.p6`); a scope with `*` is an
    fnmatch pattern (`*._depthwise_conv`)."""
    if scope is None:
        return False
    return any(fnmatch.fnmatchcase(scope, s) if "*" in s else scope == s or scope.startswith(s + ".")
               for s in scopes)


AFFINE_OPS = ("Mul", "Add", "Sub", "Div")


def conv_output_scopes(proto) -> dict[str, str]:
    """{tensor name: module path} for the output of every Conv with a constant weight, and for the outputs of the
    constant Mul/Add chain right after it (an eval-mode BatchNorm). A graph clean-up that folds that chain into
    the Conv renames the weight but keeps the chain's last output name, so the mapping, taken before the
    clean-up, still names the module of the folded Conv after it."""
    graph = proto.graph
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                       for o in n.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    scopes: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Conv" or (scope := weight_scope(node, constants)) is None:
            continue
        tensor = node.output[0]
        scopes[tensor] = scope
        while len(nxt := readers.get(tensor, [])) == 1 and nxt[0].op_type in AFFINE_OPS and len(nxt[0].input) == 2:
            other = [i for i in nxt[0].input if i != tensor]
            if len(other) != 1 or other[0] not in constants:
                break
            tensor = nxt[0].output[0]
            scopes[tensor] = scope
    return scopes


def plan_int8(proto, keep_float_scopes: Sequence[str] = KEEP_FLOAT_SCOPES, op_types: Sequence[str] = QUANT_OP_TYPES,
              scopes: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(names of nodes to quantize, names of nodes of `op_types` kept float). A node is quantized when its op type
    is in `op_types`, its weight is a constant, the module it belongs to (`scopes` by output tensor, from
    `conv_output_scopes` of the graph before any clean-up; else its weight's name) is outside
    `keep_float_scopes`, and it is not downstream of NMS."""
    unnamed = [n for n in proto.graph.node if not n.name]
    if unnamed:
        raise ExportError(f"int8: {len(unnamed)} graph node(s) have no name; the quantizer selects nodes by name.")
    inits = {t.name for t in proto.graph.initializer}
    after_nms = downstream_nodes(proto)
    scopes = scopes or {}
    quantize, keep = [], []
    for node in proto.graph.node:
        if node.op_type not in op_types:
            continue
        own = weight_scope(node, inits)
        scope = None if own is None else scopes.get(node.output[0], own)
        if scope is None or node.name in after_nms or _in_scope(scope, keep_float_scopes):
            keep.append(node.name)
        else:
            quantize.append(node.name)
    return quantize, keep


def glue_nodes(proto, quantized: Sequence[str], op_types: Sequence[str] = GLUE_OP_TYPES) -> list[str]:
    """Names of the `op_types` nodes to quantize along with the Convs `quantized`, so that no float op sits between
    two int8 Convs. An activation (`ACTIVATION_OPS`) qualifies when its input comes from a quantized node or every
    reader of its output is a quantized Conv (a Relu after a float GroupNorm, feeding an int8 conv: its Q moves
    before it); any other op when all its data inputs come from quantized nodes (a residual Add of two int8
    tensors; a Resize's sizes input, a shape computation, does not count; an Add of a constant does not qualify).
    Nodes from NonMaxSuppression on never qualify. Graph order is topological, so one pass follows chains."""
    graph = proto.graph
    producer = {o: n.name for n in graph.node for o in n.output}
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    convs = set(quantized)
    done = set(quantized)
    after_nms = downstream_nodes(proto)
    glue = []
    for node in graph.node:
        if node.op_type not in op_types or node.name in after_nms or node.name in done:
            continue
        if node.op_type in ACTIVATION_OPS or node.op_type in ("Resize", "MaxPool"):
            data = [node.input[0]]
        else:
            data = [i for i in node.input if i]
        from_quantized = bool(data) and all(producer.get(i) in done for i in data)
        feeds_int8 = node.op_type in ACTIVATION_OPS and all(
            readers.get(o) and all(r in convs for r in readers[o]) for o in node.output)
        if from_quantized or feeds_int8:
            glue.append(node.name)
            done.add(node.name)
    return glue


# ---------------------------------------------------------------------------------------------- calibration


def calibration_batches(folder: str | Path, count: int, *, test_size: int = 0, test_max_size: int = 0,
                        fit: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Up to `count` images of `folder` as graph inputs (1, 3, H, W) float32 RGB 0..255, prepared as the runtime
    prepares them: the model's resize rule (shorter side `test_size`, longer at most `test_max_size`; the
    `boxseg.test_size` / `boxseg.test_max_size` metadata) or, for a model without one, fitted inside `fit` = (H, W);
    then zero-padded bottom/right to a multiple of 32."""
    from boxseg.export.images import list_images, read_rgb
    from boxseg.runtime.reference import resize_bilinear

    if count < 1:
        raise ExportError(f"--calib-images {count}: expected at least 1.")
    if not (test_size or test_max_size) and fit is None:
        raise ExportError("int8 calibration needs the model's resize rule (test_size/test_max_size) or a canvas.")
    batches = []
    for path in list_images(folder, limit=count):
        image = read_rgb(path)
        h, w = image.shape[:2]
        nh, nw = plan_resize(h, w, test_size, test_max_size) if (test_size or test_max_size) else fit_size(h, w, fit)[0]
        # The runtime's own bilinear resize (runtime/reference.py, which its C++ core matches), not PIL's, which
        # antialiases when it shrinks: calibrate on the inputs the graph will see.
        canvas = np.zeros((1, 3, pad_to(nh, SIZE_DIVISOR), pad_to(nw, SIZE_DIVISOR)), dtype=np.float32)
        canvas[0, :, :nh, :nw] = resize_bilinear(image, nh, nw).transpose(2, 0, 1)
        batches.append(canvas)
    return batches


def _reader(batches: list[np.ndarray], input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


@contextlib.contextmanager
def _quiet_quantizer():
    """quantize_static logs progress on the root logger, and warns that `quant_pre_process` was not run: its
    symbolic shape inference fails on this graph's dynamic FPN sizes, and onnxslim already did its folding."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(proto, batches: list[np.ndarray], *, keep_float_scopes: Sequence[str] = KEEP_FLOAT_SCOPES,
                  op_types: Sequence[str] = QUANT_OP_TYPES, per_channel: bool = True, reduce_range: bool = False,
                  quant_format: str = "QDQ", calibrate_method: str = "MinMax", input_name: str = "images",
                  extra_options: dict[str, Any] | None = None, scopes: dict[str, str] | None = None,
                  activation_type: str = ACTIVATION_TYPE, glue_op_types: Sequence[str] = GLUE_OP_TYPES):
    """Static int8 quantization of `proto` (an fp32 ModelProto). Returns (int8 ModelProto, QuantizeReport)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not batches:
        raise ExportError("int8: no calibration images.")
    quantize, keep = plan_int8(proto, keep_float_scopes, op_types, scopes)
    if not quantize:
        raise ExportError(f"int8: no {'/'.join(op_types)} node is left to quantize after excluding "
                          f"{list(keep_float_scopes)} and the nodes after NonMaxSuppression.")
    glue = glue_nodes(proto, quantize, glue_op_types)
    kinds = {n.name: n.op_type for n in proto.graph.node}
    glue_types = sorted({kinds[g] for g in glue})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="boxseg-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(proto, str(src))
        try:
            with _quiet_quantizer():
                quantize_static(
                    str(src), str(dst), _reader(batches, input_name), quant_format=QuantFormat[quant_format],
                    op_types_to_quantize=[*op_types, *glue_types], per_channel=per_channel,
                    reduce_range=reduce_range, activation_type=QuantType[activation_type],
                    weight_type=QuantType.QInt8, nodes_to_quantize=[*quantize, *glue],
                    calibrate_method=CalibrationMethod[calibrate_method],
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, **(extra_options or {})})
        except ExportError:
            raise
        except Exception as exc:  # the quantizer raises many types; keep the cause chained
            raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {str(exc)[:2000]}") from exc
        out = onnx.load_model(str(dst))
    sizes = sorted({tuple(int(s) for s in b.shape[2:]) for b in batches})
    report = QuantizeReport(
        precision="int8",
        method=f"onnxruntime quantize_static {quant_format}, per-channel {str(per_channel).lower()} int8 weights "
               f"(symmetric), {'uint8' if activation_type == 'QUInt8' else 'int8'} activations (asymmetric), "
               f"reduce_range {str(reduce_range).lower()}",
        op_types=list(op_types), nodes_quantized=len(quantize), nodes_float=len(keep),
        glue_quantized={t: sum(kinds[g] == t for g in glue) for t in glue_types}, activation_type=activation_type,
        kept_float_scopes=[*keep_float_scopes, "NonMaxSuppression and every node after it",
                           "dynamic mask head (weights computed in the graph)"],
        calib_images=len(batches), calib_method=calibrate_method, calib_size=[list(s) for s in sizes[:8]],
        seconds=time.perf_counter() - start)
    return out, report


# ---------------------------------------------------------------------------------------------- fp16


def sort_topologically(proto) -> None:
    """Reorder `proto.graph.node` so every node follows the producers of its inputs (the fp16 converter appends
    its input casts at the end, which onnx.checker rejects). Stable: nodes keep their order where they can."""
    graph = proto.graph
    available = {t.name for t in graph.initializer} | {v.name for v in graph.input} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in available})[:5]
            raise ExportError(f"graph has a cycle or reads undefined tensors {missing}.")
        pending = rest
    copies = [type(n)() for n in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)


def convert_fp16(proto, *, block_ops: Sequence[str] = FP16_EXTRA_BLOCK_OPS):
    """fp16 weights and compute, fp32 inputs/outputs. Returns (fp16 ModelProto, QuantizeReport)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    start = time.perf_counter()
    blocked = sorted({*DEFAULT_OP_BLOCK_LIST, *block_ops})
    after_nms = sorted(downstream_nodes(proto))
    try:
        out = convert_float_to_float16(proto, keep_io_types=True, op_block_list=blocked, node_block_list=after_nms)
    except Exception as exc:  # converter errors come in many types; keep the cause chained
        raise ExportError(f"fp16 conversion failed: {type(exc).__name__}: {str(exc)[:2000]}") from exc
    sort_topologically(out)
    present = {n.op_type for n in proto.graph.node}
    converted = [n for n in proto.graph.node if n.op_type not in blocked and n.name not in set(after_nms)]
    report = QuantizeReport(
        precision="fp16", method="onnxruntime.transformers.float16.convert_float_to_float16, keep_io_types",
        op_types=sorted({n.op_type for n in converted}), nodes_quantized=len(converted),
        nodes_float=len(proto.graph.node) - len(converted),
        kept_float_scopes=[f"op types {', '.join(o for o in blocked if o in present)}",
                           "NonMaxSuppression and every node after it"],
        seconds=time.perf_counter() - start)
    return out, report


# ---------------------------------------------------------------------------------------------- export hook


def precision_of(opts) -> str:
    return "int8" if opts.int8 else "fp16" if opts.half else "fp32"


def finish_graph(proto, opts, meta: dict[str, str]):
    """The export's last graph passes (export/onnx.py calls this before the file is written): onnxslim clean-up
    (`opts.slim`), then int8 (`opts.int8`, calibrated on `opts.calib_data`) or fp16 (`opts.half`).
    Returns (ModelProto, metadata to add, details for `ExportResult.details`)."""
    import json

    from boxseg.export.slim import slim_graph

    scopes = conv_output_scopes(proto)  # before the clean-up renames folded Conv weights
    exported_nodes = len(proto.graph.node)
    slim = None
    if opts.slim:
        proto, slim = slim_graph(proto)
    slimmed_nodes = len(proto.graph.node)
    report = None
    if opts.int8:
        batches = calibration_batches(
            opts.calib_data, opts.calib_images, test_size=int(meta.get("boxseg.test_size", 0)),
            test_max_size=int(meta.get("boxseg.test_max_size", 0)), fit=tuple(opts.imgsz))
        proto, report = quantize_int8(proto, batches, scopes=scopes)
    elif opts.half:
        proto, report = convert_fp16(proto)
    nodes = {"exported": exported_nodes, "slimmed": slimmed_nodes if slim and not slim.skipped else None,
             "final": len(proto.graph.node)}
    added = {"boxseg.precision": precision_of(opts), "boxseg.graph_nodes": json.dumps(nodes, sort_keys=True),
             "boxseg.slim": slim.tool if slim and not slim.skipped else "off" if slim is None else
             f"skipped: {slim.skipped}"}
    if report is not None:
        added.update(report.to_metadata())
    details = {"precision": precision_of(opts), "graph_nodes": nodes,
               "slim": None if slim is None else asdict(slim),
               "quantization": None if report is None else asdict(report)}
    return proto, added, details
