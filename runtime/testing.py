"""A small ONNX model that obeys the exported-graph contract (docs/contracts.md), built with onnx.helper.

It proves the runtime independently of the real exporter: from the input images it derives, deterministically,
`max_dets` boxes (fixed layouts nudged by the image brightness), scores, classes, the count of valid detections
(one detection is valid only on brighter images) and elliptic blob masks at stride 4 whose edges follow the
image's red channel. Dynamic batch, height and width. Used by tests/runtime and the latency benchmark.

Imports onnx (not torch) and only when called.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

OUTPUTS = ("boxes", "scores", "classes", "masks", "num_dets")


def default_metadata(max_dets: int, class_names: list[str], input_format: str) -> dict[str, str]:
    return {
        "boxseg.format": "boxseg-onnx",
        "boxseg.version": "0.1.0",
        "boxseg.class_names": json.dumps(class_names),
        "boxseg.mean": json.dumps([123.675, 116.28, 103.53]),
        "boxseg.std": json.dumps([58.395, 57.12, 57.375]),
        "boxseg.size_divisor": "32",
        "boxseg.mask_stride": "4",
        "boxseg.max_dets": str(max_dets),
        "boxseg.preset": "test",
        "boxseg.input_format": input_format,
        "boxseg.mask_threshold": "0.5",
    }


def make_test_model(
    path: str | Path,
    *,
    max_dets: int = 8,
    num_valid: int = 5,
    class_names: list[str] | None = None,
    input_type: str = "float32",
    normalized_input: bool = False,
    metadata: dict[str, str] | None = None,
    drop_output: str | None = None,
    convs: int = 0,
    conv_channels: int = 32,
    seed: int = 0,
) -> Path:
    """Writes the model to `path` and returns it.

    num_valid detections are always valid, one more only when the image mean is above ~106/255, the rest are
    padding rows (score 0, class -1). input_type "uint8" makes the graph input uint8; normalized_input makes it
    expect (x - mean) / std (and undo it inside, so the outputs match the plain graph). metadata replaces the
    default `boxseg.*` metadata entirely (pass {} for a model without any). drop_output removes one output
    (a malformed graph). convs > 0 adds that many 3x3 convolutions at full resolution whose result nudges the
    brightness by < 1e-6 so that inference costs about what a small real network does (for benchmarks).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not 0 <= num_valid < max_dets:
        raise ValueError(f"num_valid must be in [0, max_dets), got {num_valid} with max_dets={max_dets}")
    class_names = class_names if class_names is not None else ["circle", "square", "triangle"]
    rng = np.random.default_rng(seed)
    d = max_dets
    cx = rng.uniform(0.15, 0.85, d).astype(np.float32)
    cy = rng.uniform(0.15, 0.85, d).astype(np.float32)
    half_w = rng.uniform(0.04, 0.2, d).astype(np.float32)
    half_h = rng.uniform(0.04, 0.2, d).astype(np.float32)
    if d > 1:  # one box reaching past the bottom-right corner exercises clipping
        cx[1], cy[1], half_w[1], half_h[1] = 0.93, 0.9, 0.12, 0.15
    base_scores = np.full(d, 0.1, np.float32)
    base_scores[:num_valid] = np.linspace(0.95, 0.35, num_valid) if num_valid else []
    base_scores[num_valid] = 0.3  # valid iff 0.3 * (0.6 + 0.4 m) > 0.2, i.e. mean brightness m > 5/12
    base_classes = (np.arange(d) % max(1, len(class_names))).astype(np.int64)
    mean = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
    std = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)

    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    nodes: list[Any] = []

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    elem = TensorProto.UINT8 if input_type == "uint8" else TensorProto.FLOAT
    x = "images"
    if input_type == "uint8":
        x = node("Cast", [x], "x_float", to=TensorProto.FLOAT)
    if normalized_input:
        x = node("Mul", [x, const("std", std)], "x_unstd")
        x = node("Add", [x, const("mean", mean)], "x_raw")

    m = node("ReduceMean", [x], "mean4", axes=[1, 2, 3], keepdims=1)
    m = node("Div", [m, const("c255", 255.0)], "mean01")
    if convs > 0:
        feat, cin = x, 3
        for i in range(convs):
            w = rng.normal(0, 0.05, (conv_channels, cin, 3, 3)).astype(np.float32)
            feat = node("Conv", [feat, const(f"conv{i}_w", w)], f"conv{i}", pads=[1, 1, 1, 1])
            feat = node("Relu", [feat], f"relu{i}")
            cin = conv_channels
        nudge = node("ReduceMean", [feat], "conv_mean", axes=[1, 2, 3], keepdims=1)
        nudge = node("Mul", [nudge, const("tiny", 1e-9)], "conv_nudge")
        m = node("Add", [m, nudge], "mean01_n")
    m2 = node("Reshape", [m, const("shape_b1", [-1, 1], np.int64)], "m2")  # (B, 1)

    shape = node("Shape", [x], "shape")
    h_i = node("Gather", [shape, const("i2", 2, np.int64)], "h_int")
    w_i = node("Gather", [shape, const("i3", 3, np.int64)], "w_int")
    h_f = node("Cast", [h_i], "h_f", to=TensorProto.FLOAT)
    w_f = node("Cast", [w_i], "w_f", to=TensorProto.FLOAT)

    centred = node("Sub", [m2, const("half", 0.5)], "m_centred")
    cx_b = node("Add", [const("cx", cx), node("Mul", [centred, const("k_cx", 0.1)], "dcx")], "cx_b")
    cy_b = node("Add", [const("cy", cy), node("Mul", [centred, const("k_cy", 0.05)], "dcy")], "cy_b")
    hw_c, hh_c = const("half_w", half_w), const("half_h", half_h)
    x0 = node("Mul", [node("Sub", [cx_b, hw_c], "x0n"), w_f], "x0")
    x1 = node("Mul", [node("Add", [cx_b, hw_c], "x1n"), w_f], "x1")
    y0 = node("Mul", [node("Sub", [cy_b, hh_c], "y0n"), h_f], "y0")
    y1 = node("Mul", [node("Add", [cy_b, hh_c], "y1n"), h_f], "y1")
    ax2 = const("ax2", [2], np.int64)
    corners = [node("Unsqueeze", [v, ax2], v + "_u") for v in (x0, y0, x1, y1)]
    node("Concat", corners, "boxes", axis=2)

    factor = node("Add", [const("k06", 0.6), node("Mul", [m2, const("k04", 0.4)], "m04")], "score_factor")
    raw = node("Mul", [const("base_scores", base_scores), factor], "raw_scores")
    valid = node("Greater", [raw, const("score_min", 0.2)], "valid")
    node("Where", [valid, raw, const("zero", 0.0)], "scores")
    node(
        "Where",
        [valid, const("base_classes", base_classes, np.int64), const("neg1", -1, np.int64)],
        "classes",
    )
    valid_i = node("Cast", [valid], "valid_i", to=TensorProto.INT64)
    node("ReduceSum", [valid_i, const("ax1", [1], np.int64)], "num_dets", keepdims=0)

    pooled = node("AveragePool", [x], "pooled", kernel_shape=[4, 4], strides=[4, 4])
    red = node(
        "Slice",
        [pooled, const("s0", [0], np.int64), const("s1", [1], np.int64), const("s_ax", [1], np.int64)],
        "red",
    )
    texture = node(
        "Sub", [node("Div", [red, const("c255b", 255.0)], "red01"), const("half_b", 0.5)], "texture"
    )
    four = const("four", 4, np.int64)
    h4 = node("Div", [h_i, four], "h4")
    w4 = node("Div", [w_i, four], "w4")
    zero_i, one_i = const("zero_i", 0, np.int64), const("one_i", 1, np.int64)

    def centres(n: str, name: str) -> str:
        # Input-pixel centres of the stride-4 mask cells: (j + 0.5) * 4.
        r = node("Cast", [node("Range", [zero_i, n, one_i], name + "_r")], name + "_rf", to=TensorProto.FLOAT)
        shifted = node("Add", [r, const(name + "_h", 0.5)], name + "_c")
        return node("Mul", [shifted, const(name + "_k", 4.0)], name + "_px")

    xs = node("Reshape", [centres(w4, "xs"), const("shape_x", [1, 1, 1, -1], np.int64)], "xs4")
    ys = node("Reshape", [centres(h4, "ys"), const("shape_y", [1, 1, -1, 1], np.int64)], "ys4")
    ax23 = const("ax23", [2, 3], np.int64)
    cxp = node("Unsqueeze", [node("Mul", [cx_b, w_f], "cx_px"), ax23], "cx_px4")
    cyp = node("Unsqueeze", [node("Mul", [cy_b, h_f], "cy_px"), ax23], "cy_px4")
    shape_d = const("shape_d", [1, d, 1, 1], np.int64)
    hwp = node("Reshape", [node("Mul", [hw_c, w_f], "hw_px"), shape_d], "hw_px4")
    hhp = node("Reshape", [node("Mul", [hh_c, h_f], "hh_px"), shape_d], "hh_px4")
    dx = node("Div", [node("Sub", [xs, cxp], "dx_raw"), hwp], "dx")
    dy = node("Div", [node("Sub", [ys, cyp], "dy_raw"), hhp], "dy")
    r2 = node("Add", [node("Mul", [dx, dx], "dx2"), node("Mul", [dy, dy], "dy2")], "r2")
    e = node("Sub", [const("one_f", 1.0), r2], "ellipse")
    logits = node(
        "Add",
        [node("Mul", [e, const("k8", 8.0)], "e8"), node("Mul", [texture, const("k3", 3.0)], "tex3")],
        "logits",
    )
    node("Sigmoid", [logits], "masks")

    dims = ["batch", 3, "height", "width"]
    outputs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", d, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", d]),
        helper.make_tensor_value_info("classes", TensorProto.INT64, ["batch", d]),
        helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["batch", d, "mask_h", "mask_w"]),
        helper.make_tensor_value_info("num_dets", TensorProto.INT64, ["batch"]),
    ]
    if drop_output is not None:
        outputs = [o for o in outputs if o.name != drop_output]
    graph = helper.make_graph(
        nodes, "boxseg_test_model", [helper.make_tensor_value_info("images", elem, dims)], outputs, inits
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="boxseg-tests"
    )
    model.ir_version = 8
    if input_type == "uint8":
        fmt = "uint8 NCHW RGB 0-255"
    elif normalized_input:
        fmt = "float32 NCHW RGB normalized"
    else:
        fmt = "float32 NCHW RGB 0-255"
    md = default_metadata(max_dets, class_names, fmt) if metadata is None else metadata
    for key, value in md.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


def run_reference_graph(path: str | Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The five outputs of the model at `path` on a ready (B, 3, H, W) batch, by onnxruntime's Python API."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    values = session.run(list(OUTPUTS), {"images": batch})
    return dict(zip(OUTPUTS, values))
