"""int8 / fp16 ONNX exports and the onnxslim clean-up: node selection, calibration inputs, the precision-aware
--verify, metadata, and that the runtime, ONNX Runtime, `bench latency` and `eval --model` take the models as is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from boxseg.export.errors import ExportError
from click.testing import CliRunner
from export_helpers import EXPORT_IMGSZ, make_student, write_checkpoint
from onnx import TensorProto, numpy_helper

from boxseg.cli import main

# ---------------------------------------------------------------------------------------------- hand-made graph


def _graph_with_scopes() -> onnx.ModelProto:
    """x -> Conv(stem, then a BatchNorm-like Mul/Add) -> Conv(head) -> NMS-ish tail with a dynamic MatMul.

    `model.a.weight` feeds a Conv followed by a constant Mul and Add (what onnxslim folds); `model.b.weight` a
    Conv; a MatMul whose weight is computed; a NonMaxSuppression whose reader (a Conv on a constant weight)
    must stay float because it is after NMS."""
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [init("model.a.weight", (4, 3, 3, 3)), init("bn_scale", (1, 4, 1, 1)), init("bn_shift", (1, 4, 1, 1)),
             init("model.b.weight", (4, 4, 1, 1)), init("model.after.weight", (1, 1, 1, 1)),
             numpy_helper.from_array(np.array([10], np.int64), "max_out"),
             numpy_helper.from_array(np.array([0, 3, 1, 1], np.int64), "nms_shape")]
    nodes = [
        oh.make_node("Conv", ["x", "model.a.weight"], ["conv_a"], name="n_conv_a", pads=[1, 1, 1, 1]),
        oh.make_node("Mul", ["conv_a", "bn_scale"], ["bn_mul"], name="n_bn_mul"),
        oh.make_node("Add", ["bn_mul", "bn_shift"], ["bn_add"], name="n_bn_add"),
        oh.make_node("Conv", ["bn_add", "model.b.weight"], ["conv_b"], name="n_conv_b"),
        oh.make_node("MatMul", ["conv_b", "conv_b"], ["dyn"], name="n_dynamic_matmul"),
        oh.make_node("ReduceMean", ["dyn"], ["boxes_like"], name="n_boxes", keepdims=0, axes=[1]),
        oh.make_node("NonMaxSuppression", ["boxes_like", "boxes_like", "max_out"], ["keep"], name="n_nms"),
        oh.make_node("Cast", ["keep"], ["keep_f"], name="n_cast", to=TensorProto.FLOAT),
        oh.make_node("Reshape", ["keep_f", "nms_shape"], ["keep_4d"], name="n_reshape"),
        oh.make_node("Conv", ["keep_4d", "model.after.weight"], ["y"], name="n_conv_after"),
    ]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 1, 1])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_nodes_after_nms_are_found_transitively() -> None:
    from boxseg.export.quantize import downstream_nodes

    assert downstream_nodes(_graph_with_scopes()) == {"n_nms", "n_cast", "n_reshape", "n_conv_after"}
    assert downstream_nodes(_graph_with_scopes(), "Softmax") == set()


def test_conv_scopes_follow_the_constant_affine_chain() -> None:
    from boxseg.export.quantize import conv_output_scopes

    scopes = conv_output_scopes(_graph_with_scopes())
    # the Mul/Add after conv a carry its module, so a Conv folded with them keeps the name "model.a"
    assert scopes["conv_a"] == scopes["bn_mul"] == scopes["bn_add"] == "model.a"
    assert scopes["conv_b"] == "model.b"
    assert "dyn" not in scopes and "boxes_like" not in scopes


def test_plan_keeps_dynamic_weights_nms_tail_and_named_scopes_float() -> None:
    from boxseg.export.quantize import plan_int8

    proto = _graph_with_scopes()
    quantize, keep = plan_int8(proto, keep_float_scopes=())
    assert quantize == ["n_conv_a", "n_conv_b"] and keep == ["n_conv_after"]
    quantize, keep = plan_int8(proto, keep_float_scopes=("model.a",), op_types=("Conv", "MatMul"))
    assert quantize == ["n_conv_b"] and sorted(keep) == ["n_conv_a", "n_conv_after", "n_dynamic_matmul"]
    # "model.a" must not match "model.ab"; a pattern with * is fnmatch
    assert plan_int8(proto, keep_float_scopes=("model",))[0] == []
    assert plan_int8(proto, keep_float_scopes=("model.",))[0] == ["n_conv_a", "n_conv_b"]
    assert plan_int8(proto, keep_float_scopes=("*.b",))[0] == ["n_conv_a"]
    # a folded Conv whose weight lost its module name is found through the carried scopes
    folded = _graph_with_scopes()
    folded.graph.node[0].input[1] = "folded_weight"
    folded.graph.initializer[0].name = "folded_weight"
    assert plan_int8(folded, keep_float_scopes=("model.a",))[0] == ["n_conv_a", "n_conv_b"]
    assert plan_int8(folded, keep_float_scopes=("model.a",), scopes={"conv_a": "model.a"})[0] == ["n_conv_b"]


def test_topological_sort_moves_producers_first() -> None:
    from boxseg.export.quantize import sort_topologically

    proto = _graph_with_scopes()
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes[3:] + nodes[:3])  # conv_b reads bn_add before its producer
    sort_topologically(proto)
    assert [n.name for n in proto.graph.node] == [n.name for n in nodes]
    onnx.checker.check_model(proto)
    proto.graph.node[0].input[0] = "nowhere"
    with pytest.raises(ExportError, match="undefined tensors"):
        sort_topologically(proto)


def test_plan_rejects_unnamed_nodes() -> None:
    from boxseg.export.quantize import plan_int8

    proto = _graph_with_scopes()
    proto.graph.node[1].name = ""
    with pytest.raises(ExportError, match="1 graph node"):
        plan_int8(proto)


def _conv_chain(nms_tail: bool = False) -> onnx.ModelProto:
    """x -> Conv c1 -> Clip -> Conv c2 -> residual Add(c2, clip) -> Relu -> Resize(sizes from Shape) -> Conv c3
    -> Add(constant) -> Relu (float input, read only by Conv c4) -> Conv c4 -> Mul(constant) -> Relu (read by a
    float op) -> y; with `nms_tail`, a NonMaxSuppression whose output feeds a Relu."""
    rng = np.random.default_rng(2)

    def w(name: str, cout: int, cin: int, k: int = 3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32), name)

    inits = [w("model.c1.weight", 8, 3), w("model.c2.weight", 8, 8), w("model.c3.weight", 8, 8),
             w("model.c4.weight", 4, 8, 1), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.float32(6), "six"),
             numpy_helper.from_array(rng.standard_normal((1, 8, 1, 1)).astype(np.float32), "shift"),
             numpy_helper.from_array(np.full((1, 4, 1, 1), 0.5, np.float32), "scale"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
             numpy_helper.from_array(np.array([1, 1], np.int64), "one_one"),
             numpy_helper.from_array(np.array([2, 2], np.int64), "two_two")]
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        oh.make_node("Conv", ["x", "model.c1.weight"], ["c1"], name="c1", **pad),
        oh.make_node("Clip", ["c1", "zero", "six"], ["clip"], name="clip"),
        oh.make_node("Conv", ["clip", "model.c2.weight"], ["c2"], name="c2", **pad),
        oh.make_node("Add", ["c2", "clip"], ["res"], name="add_res"),
        oh.make_node("Relu", ["res"], ["r1"], name="relu_after_add"),
        oh.make_node("Shape", ["r1"], ["r1_shape"], name="shape"),
        oh.make_node("Gather", ["r1_shape", "hw_axes"], ["r1_hw"], name="gather_hw"),
        oh.make_node("Mul", ["r1_hw", "two_two"], ["up_hw"], name="up_hw"),
        oh.make_node("Slice", ["r1_shape", "zero_i", "two_i"], ["r1_nc"], name="slice_nc"),
        oh.make_node("Concat", ["r1_nc", "up_hw"], ["up_size"], name="concat_size", axis=0),
        oh.make_node("Resize", ["r1", "", "", "up_size"], ["up"], name="resize", mode="nearest"),
        oh.make_node("Conv", ["up", "model.c3.weight"], ["c3"], name="c3", **pad),
        oh.make_node("Add", ["c3", "shift"], ["c3_shift"], name="add_const"),
        oh.make_node("Relu", ["c3_shift"], ["r2"], name="relu_feeds_int8"),
        oh.make_node("Conv", ["r2", "model.c4.weight"], ["c4"], name="c4"),
        oh.make_node("Mul", ["c4", "scale"], ["c4_scaled"], name="mul_float"),
        oh.make_node("Relu", ["c4_scaled"], ["y"], name="relu_feeds_float"),
    ]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "zero_i"),
              numpy_helper.from_array(np.array([2], np.int64), "two_i")]
    outputs = [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])]
    if nms_tail:
        inits.append(numpy_helper.from_array(np.array([4], np.int64), "max_out"))
        nodes += [oh.make_node("ReduceMean", ["y"], ["boxes"], name="boxes", keepdims=0, axes=[3]),
                  oh.make_node("NonMaxSuppression", ["boxes", "boxes", "max_out"], ["keep"], name="nms"),
                  oh.make_node("Cast", ["keep"], ["keep_f"], name="cast", to=TensorProto.FLOAT),
                  oh.make_node("Relu", ["keep_f"], ["keep_r"], name="relu_after_nms")]
        outputs.append(oh.make_tensor_value_info("keep_r", TensorProto.FLOAT, ["n", 3]))
    graph = oh.make_graph(nodes, "chain", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                          outputs, inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_glue_ops_between_quantized_convs_are_chosen() -> None:
    from boxseg.export.quantize import glue_nodes, plan_int8

    proto = _conv_chain(nms_tail=True)
    onnx.checker.check_model(proto)
    convs, _ = plan_int8(proto, keep_float_scopes=())
    assert convs == ["c1", "c2", "c3", "c4"]
    # the Add of a constant, the shape computation (Concat of shape tensors), the Relu after a float Mul that only
    # float ops read, and everything after NMS stay float
    assert glue_nodes(proto, convs) == ["clip", "add_res", "relu_after_add", "resize", "relu_feeds_int8"]
    # with c2 float the residual Add (and what follows it) loses an int8 input; the Relu before c4 still qualifies
    assert glue_nodes(proto, ["c1", "c3", "c4"]) == ["clip", "relu_feeds_int8"]
    # only Relu: the float residual Add breaks the chain before the Relu after it
    assert glue_nodes(proto, convs, op_types=("Relu",)) == ["relu_feeds_int8"]
    assert glue_nodes(proto, []) == []


def test_int8_chain_runs_as_qlinear_ops_in_onnxruntime(tmp_path: Path) -> None:
    """uint8 activations and the glue ops quantized: ONNX Runtime's optimised graph runs every quantized Conv as a
    QLinearConv and the residual Add as QLinearAdd, with no float Conv on dequantized weights and no Clip/Relu left
    between them (with int8 activations it left most convs in float), and the result stays near fp32."""
    import onnxruntime as ort
    from boxseg.export.quantize import quantize_int8

    proto = _conv_chain()
    rng = np.random.default_rng(5)
    batches = [(rng.random((1, 3, 16, 16)) * 255).astype(np.float32) / 64 for _ in range(8)]
    q, report = quantize_int8(proto, batches, keep_float_scopes=(), input_name="x")
    assert report.activation_type == "QUInt8" and report.nodes_quantized == 4 and report.nodes_float == 0
    assert report.glue_quantized == {"Add": 1, "Clip": 1, "Relu": 2, "Resize": 1}
    src, optimised = tmp_path / "q.onnx", tmp_path / "q_opt.onnx"
    onnx.save(q, str(src))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(optimised)
    session = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(optimised)).graph.node]
    assert ops.count("QLinearConv") == 4 and "Conv" not in ops and "Clip" not in ops
    assert ops.count("QLinearAdd") == 1 and ops.count("Relu") == 1  # the Relu after the float Mul
    reference = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = batches[0]
    want, got = reference.run(None, {"x": x})[0], session.run(None, {"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


# ---------------------------------------------------------------------------------------------- calibration


def _image_folder(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_calibration_inputs_use_the_models_resize_rule_and_padding(tmp_path: Path) -> None:
    from boxseg.export.quantize import calibration_batches

    from boxseg.contract import pad_to, plan_resize

    folder = _image_folder(tmp_path / "imgs", [(100, 150), (61, 40), (64, 64)])
    batches = calibration_batches(folder, 2, test_size=96, test_max_size=120)
    assert len(batches) == 2  # the limit
    for x, (h, w) in zip(batches, [(100, 150), (61, 40)]):
        nh, nw = plan_resize(h, w, 96, 120)
        assert x.shape == (1, 3, pad_to(nh), pad_to(nw)) and x.dtype == np.float32
        assert x[0, :, :nh, :nw].max() > 0 and (x[0, :, nh:] == 0).all() and (x[0, :, :, nw:] == 0).all()
        assert 0 <= x.min() and x.max() <= 255
    # Exactly what the runtime feeds the graph (its numpy reference, which the C++ core is tested against).
    from boxseg.export.images import list_images, read_rgb
    from boxseg.runtime.reference import preprocess

    for x, path in zip(batches, list_images(folder, limit=2)):
        np.testing.assert_allclose(x, preprocess([read_rgb(path)], 96, 120)[0], rtol=0, atol=1e-4)
    fitted = calibration_batches(folder, 3, fit=(64, 64))
    assert [b.shape[2:] for b in fitted] == [(64, 64), (64, 64), (64, 64)]
    with pytest.raises(ExportError, match="--calib-images 0"):
        calibration_batches(folder, 0, test_size=96)
    with pytest.raises(ExportError, match="no images found"):
        calibration_batches(_image_folder(tmp_path / "empty", []), 4, test_size=96)


# ---------------------------------------------------------------------------------------------- verify tolerances


def _outputs(boxes: list[list[float]], scores: list[float], d: int = 3) -> dict[str, np.ndarray]:
    n = len(boxes)
    out = {"boxes": np.zeros((1, d, 4), np.float32), "scores": np.zeros((1, d), np.float32),
           "classes": np.full((1, d), -1, np.int64), "masks": np.zeros((1, d, 8, 8), np.float32),
           "num_dets": np.array([n], np.int64)}
    for i, (box, score) in enumerate(zip(boxes, scores)):
        out["boxes"][0, i], out["scores"][0, i], out["classes"][0, i] = box, score, 0
        x0, y0, x1, y1 = (int(v) // 4 for v in box)
        out["masks"][0, i, y0:y1, x0:x1] = 0.9
    return out


def test_precision_tolerances_match_by_box_iou_and_report_it() -> None:
    from boxseg.export.verify import compare_detections, tolerances_for

    ref = _outputs([[0, 0, 20, 20], [4, 4, 28, 28]], [0.9, 0.6])
    shifted = _outputs([[0, 0, 20, 21], [4, 4, 28, 28]], [0.86, 0.63])  # IoU 0.95, score errors 0.04, 0.03
    strict = compare_detections(ref, shifted, tolerances_for("fp32"), score_threshold=0.05)
    assert not strict["passed"]
    loose = compare_detections(ref, shifted, tolerances_for("int8"), score_threshold=0.05)
    assert loose["passed"], loose["failures"]
    iou = 20 * 20 / (20 * 21)
    q = tolerances_for("int8").quantile  # judged at the q-quantile of the pairs (linear interpolation)
    assert loose["matched"] == 2 and loose["min_box_iou"] == pytest.approx(iou + q * (1 - iou))
    assert loose["score_abs_err"] == pytest.approx(0.04, abs=1e-6)
    # a box moved below the matching IoU has no counterpart even with the same score
    moved = _outputs([[0, 0, 20, 45], [4, 4, 28, 28]], [0.9, 0.6])
    bad = compare_detections(ref, moved, tolerances_for("int8"), score_threshold=0.05)
    assert not bad["passed"] and any("no counterpart" in f for f in bad["failures"])
    # int8 compares detections scoring >= min_score: a missing low-score one needs no counterpart ...
    ref3 = _outputs([[0, 0, 20, 20], [4, 4, 28, 28], [30, 0, 31, 8]], [0.9, 0.6, 0.2])
    low = compare_detections(ref3, shifted, tolerances_for("int8"), score_threshold=0.05)
    assert low["passed"] and low["borderline"] == []
    # ... and one within the band the matched score errors give around that cut is borderline
    ref3["scores"][0, 2] = 0.33
    edge = compare_detections(ref3, shifted, tolerances_for("int8"), score_threshold=0.05)
    assert edge["passed"] and [d["score"] for d in edge["borderline"]] == [pytest.approx(0.33)]
    assert edge["borderline_tolerance"] == pytest.approx(4 * (0.03 + (1 - q) * 0.01), abs=1e-6)
    # fp16 lets a share of the detections flip at the NMS IoU threshold, no more: 1 of 20 may, 1 of 3 may not
    many = _outputs([[i, 0, i + 10, 10] for i in range(20)], [0.9 - 0.01 * i for i in range(20)], d=20)
    fewer = _outputs([[i, 0, i + 10, 10] for i in range(19)], [0.9 - 0.01 * i for i in range(19)], d=20)
    flip = compare_detections(many, fewer, tolerances_for("fp16"), score_threshold=0.05)
    assert flip["passed"] and [d["cut"] for d in flip["borderline"]] == ["NMS tie"]
    assert not compare_detections(ref3, _outputs([[0, 0, 20, 20]], [0.9]), tolerances_for("fp16"),
                                  score_threshold=0.05)["passed"]
    with pytest.raises(ExportError, match="unknown precision 'int4'"):
        tolerances_for("int4")


def test_metadata_precision_is_typed_and_checked() -> None:
    from boxseg.export.metadata import build_metadata, parse_metadata

    meta = build_metadata(class_names=["a"], mean=[0, 0, 0], std=[1, 1, 1], max_dets=5, preset="p")
    assert parse_metadata(meta).precision == "fp32"  # models from before the field
    assert parse_metadata({**meta, "boxseg.precision": "int8"}).precision == "int8"
    with pytest.raises(ExportError, match="boxseg.precision is 'int4'"):
        parse_metadata({**meta, "boxseg.precision": "int4"})


# ---------------------------------------------------------------------------------------------- onnxslim


def test_slim_falls_back_when_onnxslim_is_missing_or_changes_the_io(monkeypatch: pytest.MonkeyPatch) -> None:
    from boxseg.export.slim import slim_graph

    proto = _graph_with_scopes()
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import fails
    same, report = slim_graph(proto)
    assert same is proto and report.skipped.startswith("onnxslim is not installed")
    assert report.nodes_after == report.nodes_before == len(proto.graph.node)

    class Renaming:
        __version__ = "0"

        @staticmethod
        def slim(model):
            out = onnx.ModelProto()
            out.CopyFrom(model)
            out.graph.output[0].name = "renamed"
            return out

    monkeypatch.setitem(sys.modules, "onnxslim", Renaming)
    same, report = slim_graph(proto)
    assert same is proto and report.skipped == "onnxslim changed the graph's inputs/outputs"


# ---------------------------------------------------------------------------------------------- real exports


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory, exported: dict) -> dict:
    """The tiny student exported as int8 (calibrated on synthetic scenes) and fp16, each with --verify; fp32 is
    the folder's shared export (conftest), verified here."""
    import torch
    from boxseg.export import export
    from boxseg.export.onnx import OnnxExportInfo, verify_for_export
    from boxseg.export.options import ExportOptions, ExportResult
    from boxseg.export.source import load_student

    from boxseg.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("reduced")
    # int8 verification compares detections scoring >= 0.3; the random student scores about its prior (0.05),
    # so the reduced exports use it with a class bias that lifts its scores into the compared range.
    student = make_student()
    with torch.no_grad():
        student.head.cls_logits.bias += 4.0
    ckpt = write_checkpoint(root / "confident.pt", student)
    calib = root / "calib"
    generate_dataset(calib, num_images=6, size=(128, 160), seed=3, progress=False)
    shared = exported["result"]
    info = OnnxExportInfo(seconds=0, opset=18, dynamic=True, max_dets=int(shared["metadata"]["boxseg.max_dets"]),
                          min_side=shared["details"]["min_side"], num_nodes=shared["details"]["num_nodes"])
    fp32 = ExportResult(format="onnx", path=Path(exported["onnx"]), files=[], seconds=0, size_bytes=0,
                        metadata=shared["metadata"], details=shared["details"])
    fp32.verification = verify_for_export(load_student(exported["checkpoint"]).model, fp32.path,
                                          ExportOptions(imgsz=EXPORT_IMGSZ), info)
    results = {
        "fp32": fp32,
        # verified below: a random student's masks hover around the threshold, so its int8 mask IoU means nothing
        "int8": export(ckpt, "onnx", root / "int8.onnx", imgsz=EXPORT_IMGSZ, int8=True, calib_data=calib,
                       calib_images=4),
        "fp16": export(ckpt, "onnx", root / "fp16.onnx", imgsz=EXPORT_IMGSZ, half=True, verify=True),
    }
    int8 = results["int8"]
    int8.verification = verify_for_export(load_student(ckpt).model, int8.path,
                                          ExportOptions(imgsz=EXPORT_IMGSZ, int8=True), info)
    return {"root": root, "checkpoint": ckpt, "fp32_checkpoint": exported["checkpoint"], "calib": calib,
            "results": results}


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_export_verifies_and_records_precision(reduced: dict, precision: str) -> None:
    from boxseg.export.metadata import parse_metadata, read_onnx_metadata
    from boxseg.export.verify import tolerances_for

    result = reduced["results"][precision]
    v = result.verification
    tol = tolerances_for(precision)
    if precision == "int8":  # everything but the mask IoU of a random student (see the fixture) must pass
        assert all("mask IoU" in f for c in v["cases"] for f in c["failures"]), v
        assert v["score_abs_err"] <= tol.score_abs and v["min_box_iou"] >= tol.box_iou_judged
    else:
        assert v["passed"], v
    assert v["precision"] == precision and v["criteria"] == tolerances_for(precision).describe()
    assert v["matched"] > 0
    meta = read_onnx_metadata(result.path)
    assert parse_metadata(meta).precision == precision == result.details["precision"]
    nodes = json.loads(meta["boxseg.graph_nodes"])
    assert nodes == result.details["graph_nodes"]
    assert nodes["final"] == len(onnx.load(str(result.path)).graph.node)
    if result.details["slim"]["skipped"] == "":
        assert meta["boxseg.slim"].startswith("onnxslim ") and nodes["slimmed"] <= nodes["exported"]
    proto = onnx.load(str(result.path))
    # inputs and outputs keep the runtime's dtypes in every precision
    types = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    assert types == {"images": TensorProto.FLOAT, "boxes": TensorProto.FLOAT, "scores": TensorProto.FLOAT,
                     "classes": TensorProto.INT64, "masks": TensorProto.FLOAT, "num_dets": TensorProto.INT64}
    doc = json.loads(json.dumps(result.to_dict(), default=str))  # what `boxseg export --json` prints
    assert doc["details"]["graph_nodes"] == nodes and doc["details"]["precision"] == precision
    if precision == "fp32":
        assert "boxseg.quantization" not in meta
    else:
        q = json.loads(meta["boxseg.quantization"])
        assert q["nodes_quantized"] == result.details["quantization"]["nodes_quantized"] > 0


def test_int8_graph_quantizes_convs_only_before_nms(reduced: dict) -> None:
    from boxseg.export.quantize import KEEP_FLOAT_SCOPES, downstream_nodes

    result = reduced["results"]["int8"]
    proto = onnx.load(str(result.path))
    producer = {o: n for n in proto.graph.node for o in n.output}
    q = json.loads(read_meta(result.path)["boxseg.quantization"])
    assert q["calib_images"] == 4 and q["calib_method"] == "MinMax" and q["op_types"] == ["Conv"]
    assert all(s in q["kept_float_scopes"] for s in KEEP_FLOAT_SCOPES)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    on_int8 = [n for n in convs if producer.get(n.input[1]) is not None
               and producer[n.input[1]].op_type == "DequantizeLinear"]
    assert len(on_int8) == q["nodes_quantized"] and len(convs) - len(on_int8) == q["nodes_float"]
    after = downstream_nodes(proto)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node if n.name in after)
    for n in proto.graph.node:  # the dynamic mask head's MatMuls read float tensors
        if n.op_type == "MatMul":
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input)
    weights = {t.name: t.data_type for t in proto.graph.initializer}
    assert sum(t == TensorProto.INT8 for t in weights.values()) >= len(on_int8)
    assert q["activation_type"] == "QUInt8" and q["glue_quantized"].get("Relu", 0) > 0


def test_onnxruntime_fuses_every_quantized_conv_of_the_export(reduced: dict, tmp_path: Path) -> None:
    """The exported int8 graph as ONNX Runtime optimises it: each quantized Conv is a QLinearConv (a QDQ Conv it
    cannot fuse runs as a float Conv on dequantized weights, slower than fp32)."""
    import onnxruntime as ort

    result = reduced["results"]["int8"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(result.path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    q = result.details["quantization"]
    assert ops.count("QLinearConv") == q["nodes_quantized"] > 0
    assert ops.count("Conv") + ops.count("FusedConv") == q["nodes_float"]


def read_meta(path: Path) -> dict[str, str]:
    from boxseg.export.metadata import read_onnx_metadata

    return read_onnx_metadata(path)


def test_fp16_graph_has_half_weights_and_float_tail(reduced: dict) -> None:
    proto = onnx.load(str(reduced["results"]["fp16"].path))
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    dtypes = {t.name: t.data_type for t in proto.graph.initializer}
    assert conv_weights and all(dtypes[w] == TensorProto.FLOAT16 for w in conv_weights if w in dtypes)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_runtime_and_ort_run_the_reduced_models(reduced: dict, precision: str) -> None:
    """The runtime Predictor takes the model unchanged and agrees with a plain ONNX Runtime session on it."""
    import onnxruntime as ort
    from boxseg.export.images import letterbox
    from boxseg.export.verify import compare_detections, sample_images, tolerances_for
    from boxseg.runtime import Predictor

    path = reduced["results"][precision].path
    image = sample_images(1, size=(160, 224))[0]
    predictor = Predictor(path, threads=1, min_size=160, max_size=224)
    got = predictor(image)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = letterbox(image, (160, 224), fill_canvas=False)[0][None]
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x})))
    n = int(outs["num_dets"][0])
    assert len(got["scores"]) == n > 0
    np.testing.assert_allclose(np.sort(got["scores"]), np.sort(outs["scores"][0, :n]), atol=1e-5)
    assert got["masks"].shape == (n, *image.shape[:2])
    assert compare_detections(outs, outs, tolerances_for(precision))["passed"]


def test_bench_latency_accepts_the_reduced_models(reduced: dict, tmp_path: Path) -> None:
    for precision in ("int8", "fp16"):
        res = CliRunner().invoke(main, ["bench", "latency", "--model", str(reduced["results"][precision].path),
                                        "--backends", "ort,runtime", "--imgsz", "224", "--batch", "1", "--iters",
                                        "1", "--warmup", "0", "--threads", "1", "--json", "--out",
                                        str(tmp_path / precision)])
        assert res.exit_code == 0, res.output
        rows = json.loads(res.stdout)["rows"]
        assert {r["backend"] for r in rows} == {"ort", "runtime"} and all(r["status"] == "ok" for r in rows)


def test_cli_int8_json_and_eval_model(reduced: dict, tmp_path: Path) -> None:
    """`boxseg export --int8 --calib` reports the node counts; `boxseg eval --model` scores the file like
    `boxseg eval --checkpoint` scores the checkpoint (fp32: same AP; int8 within the int8 AP tolerance)."""
    from boxseg.export.verify import tolerances_for

    from boxseg.data.synth import generate_dataset

    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(main, ["export", "--checkpoint", str(reduced["checkpoint"]), "--format", "onnx",
                                    "--out", str(out), "--imgsz", *map(str, EXPORT_IMGSZ), "--int8", "--calib",
                                    str(reduced["calib"]), "--calib-images", "2"])
    assert res.exit_code == 0, res.output
    assert "(onnx int8," in res.stdout and "Graph nodes: onnxslim " in res.stdout
    assert "calibrated on 2 image(s), MinMax" in res.stdout
    quant = json.loads(read_meta(out)["boxseg.quantization"])
    assert quant["calib_images"] == 2
    assert quant["glue_quantized"] and all(f"{n} {t}" in res.stdout for t, n in quant["glue_quantized"].items())

    data = tmp_path / "val"
    generate_dataset(data, num_images=3, size=(128, 160), seed=9, progress=False)
    ann = json.loads((data / "annotations.json").read_text())  # the tiny student's three classes
    names = ["ellipse", "star", "ring"]
    ann["annotations"] = [a for a in ann["annotations"]
                          if next(c["name"] for c in ann["categories"] if c["id"] == a["category_id"]) in names]
    ann["categories"] = [c for c in ann["categories"] if c["name"] in names]
    (data / "annotations.json").write_text(json.dumps(ann))

    def ap(*args: str) -> dict:
        r = CliRunner().invoke(main, ["eval", "--data", str(data), "--score-thr", "0", "--json", *args])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    fp32_ref = ap("--checkpoint", str(reduced["fp32_checkpoint"]))
    ref = ap("--checkpoint", str(reduced["checkpoint"]))
    fp32 = ap("--model", str(reduced["results"]["fp32"].path))
    int8 = ap("--model", str(reduced["results"]["int8"].path))
    assert fp32["predictor"].endswith("(fp32)") and int8["predictor"].endswith("(int8)")
    for key in ("segm", "bbox"):
        assert abs(fp32[key]["AP"] - fp32_ref[key]["AP"]) <= tolerances_for("fp32").ap_delta
        assert abs(int8[key]["AP"] - ref[key]["AP"]) <= tolerances_for("int8").ap_delta
    wrong = CliRunner().invoke(main, ["eval", "--data", str(data), "--model", str(reduced["results"]["fp32"].path),
                                      "--baseline", "box-fill"])
    assert wrong.exit_code == 2 and "exactly one of" in wrong.output
