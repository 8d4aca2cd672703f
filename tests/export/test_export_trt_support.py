"""The TensorRT ONNX-operator table and the graph checker (TensorRT itself cannot be installed here)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as nh
import pytest
from boxseg.export.errors import ExportError
from boxseg.export.trt_support import (
    OPSET_MAX,
    SUPPORTED,
    TOPK_MAX_K,
    UNSUPPORTED,
    assert_tensorrt_supported,
    check_tensorrt_support,
)

F, I64, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL


def _model(nodes, inputs, outputs, inits=(), opset: int = 18) -> onnx.ModelProto:
    graph = oh.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=10)


def _x(name: str = "x", dtype: int = F, shape=(1, 4)) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, dtype, list(shape))


def _messages(model: onnx.ModelProto) -> list[str]:
    return [str(p) for p in check_tensorrt_support(model)]


def test_table_rows_are_real_onnx_operators() -> None:
    assert not set(SUPPORTED) & UNSUPPORTED
    # ONNX no longer defines these experimental/deprecated ops, but TensorRT's parser still lists them.
    legacy = {"ImageScaler", "ParametricSoftplus", "ScaledTanh", "Scatter", "Upsample", "Crop"}
    unknown = [op for op in [*SUPPORTED, *UNSUPPORTED] if op not in legacy and not onnx.defs.has(op)]
    assert unknown == []
    for key in ("NonMaxSuppression", "ScatterND", "TopK", "Resize", "MatMul", "Conv", "InstanceNormalization"):
        assert key in SUPPORTED


def test_a_plain_supported_graph_passes() -> None:
    model = _model([oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Sigmoid", ["r"], ["y"])], [_x()], [_x("y")])
    assert check_tensorrt_support(model) == []
    assert_tensorrt_supported(model)


def test_unsupported_operator_custom_domain_and_opset_are_reported() -> None:
    model = _model([oh.make_node("Unique", ["x"], ["y"])], [_x()], [_x("y")])
    assert any("Unique" in m and "not supported" in m for m in _messages(model))
    custom = _model([oh.make_node("MyNMS", ["x"], ["y"], domain="boxseg")], [_x()], [_x("y")])
    custom.opset_import.append(oh.make_opsetid("boxseg", 1))
    assert any("custom domain 'boxseg' needs a TensorRT plugin" in m for m in _messages(custom))
    new = _model([oh.make_node("Relu", ["x"], ["y"])], [_x()], [_x("y")], opset=OPSET_MAX + 1)
    assert any("outside TensorRT" in m for m in _messages(new))
    with pytest.raises(ExportError, match="1 node"):
        assert_tensorrt_supported(model)


def test_data_types_are_checked_against_the_row() -> None:
    # ScatterND on BOOL data is not in the matrix (FP32, FP16, BF16, INT32, INT64): our NMS casts after it.
    model = _model([oh.make_node("ScatterND", ["d", "i", "u"], ["y"])],
                   [_x("d", BOOL, (4,)), _x("i", I64, (2, 1)), _x("u", BOOL, (2,))], [_x("y", BOOL, (4,))])
    assert any("data type BOOL" in m for m in _messages(model))


def test_topk_needs_sorted_and_a_provable_k_bound() -> None:
    k_big = nh.from_array(np.array([TOPK_MAX_K], dtype=np.int64), "k")
    model = _model([oh.make_node("TopK", ["x", "k"], ["v", "i"])], [_x(shape=(1, 5000))],
                   [_x("v"), _x("i", I64)], inits=[k_big])
    assert any("K must be less than 3840" in m for m in _messages(model))
    unsorted = _model([oh.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0)], [_x(shape=(1, 10))],
                      [_x("v"), _x("i", I64)], inits=[nh.from_array(np.array([3], dtype=np.int64), "k")])
    assert any("sorted must be 1" in m for m in _messages(unsorted))
    # K = Min(1000, size) computed at run time, as exported graphs do it, is bounded by the constant.
    nodes = [oh.make_node("Shape", ["x"], ["s"], start=1), oh.make_node("Min", ["s", "cap"], ["k"]),
             oh.make_node("TopK", ["x", "k"], ["v", "i"])]
    cap = nh.from_array(np.array([1000], dtype=np.int64), "cap")
    bounded = _model(nodes, [_x(shape=(1, "n"))], [_x("v"), _x("i", I64)], inits=[cap])
    assert _messages(bounded) == []
    unbounded = _model(nodes[:1] + [oh.make_node("TopK", ["x", "s"], ["v", "i"])], [_x(shape=(1, "n"))],
                       [_x("v"), _x("i", I64)])
    assert any("no constant bound" in m for m in _messages(unbounded))


def test_resize_modes_and_constant_axes() -> None:
    scales = nh.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    cubic = _model([oh.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")], [_x(shape=(1, 1, 2, 2))],
                   [_x("y", shape=(1, 1, 4, 4))], inits=[scales])
    assert any("mode must be one of" in m for m in _messages(cubic))
    ok = _model([oh.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                              coordinate_transformation_mode="half_pixel")],
                [_x(shape=(1, 1, 2, 2))], [_x("y", shape=(1, 1, 4, 4))], inits=[scales])
    assert _messages(ok) == []
    dyn_axes = _model([oh.make_node("ReduceSum", ["x", "axes"], ["y"])], [_x(), _x("axes", I64, (1,))], [_x("y")])
    assert any("axes must be an initializer" in m for m in _messages(dyn_axes))
    const_axes = _model([oh.make_node("ReduceSum", ["x", "axes"], ["y"])], [_x()], [_x("y")],
                        inits=[nh.from_array(np.array([1], dtype=np.int64), "axes")])
    assert _messages(const_axes) == []


def test_nodes_inside_subgraphs_are_checked() -> None:
    then = oh.make_graph([oh.make_node("Unique", ["x"], ["a"])], "then", [], [_x("a")])
    other = oh.make_graph([oh.make_node("Identity", ["x"], ["b"])], "else", [], [_x("b")])
    model = _model([oh.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                   [_x(), _x("c", BOOL, ())], [_x("y")])
    assert any("Unique" in m and "subgraph" in m for m in _messages(model))
