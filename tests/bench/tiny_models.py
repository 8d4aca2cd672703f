"""Tiny models obeying the exported-graph contract (docs/contracts.md), for the latency harness tests.

The ONNX graph and the torch module compute the same thing, so backends can be checked against each other:
- masks (B, D, H/4, W/4): sigmoid of the 4x4-pooled channel mean, centred and scaled (values well spread in 0..1);
- boxes (B, D, 4): fixed fractions of the input width/height;
- scores (B, D): mean mask probability; classes (B, D): 0; num_dets (B,): ``n_valid`` per image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MAX_DETS = 6
N_VALID = 4


def box_fractions(d: int = MAX_DETS) -> np.ndarray:
    """(d, 4) boxes as fractions of (W, H, W, H); the last one is empty (zero width) to test that edge."""
    rng = np.random.default_rng(7)
    x0, y0 = rng.uniform(0.0, 0.6, d), rng.uniform(0.0, 0.6, d)
    w, h = rng.uniform(0.1, 0.4, d), rng.uniform(0.1, 0.4, d)
    fr = np.stack([x0, y0, x0 + w, y0 + h], 1).astype(np.float32)
    fr[N_VALID - 1, 2] = fr[N_VALID - 1, 0]
    return fr


def build_tiny_onnx(path: Path, max_dets: int = MAX_DETS, n_valid: int = N_VALID) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, arr: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name))

    nodes = [
        const("axes_c", np.array([1], np.int64)),
        const("axes_hw", np.array([2, 3], np.int64)),
        const("repeats", np.array([1, max_dets, 1, 1], np.int64)),
        const("c128", np.array(128.0, np.float32)),
        const("c32", np.array(32.0, np.float32)),
        const("zero", np.array(0.0, np.float32)),
        const("idx_whwh", np.array([3, 2, 3, 2], np.int64)),
        const("idx_b", np.array([0], np.int64)),
        const("d4", np.array([max_dets, 4], np.int64)),
        const("fractions", box_fractions(max_dets)[None]),
        const("nvalid", np.array([n_valid], np.int64)),
        helper.make_node("ReduceMean", ["images", "axes_c"], ["gray"], keepdims=1),
        helper.make_node("AveragePool", ["gray"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Sub", ["pooled", "c128"], ["centred"]),
        helper.make_node("Div", ["centred", "c32"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["prob1"]),
        helper.make_node("Tile", ["prob1", "repeats"], ["masks"]),
        helper.make_node("ReduceMean", ["masks", "axes_hw"], ["scores"], keepdims=0),
        helper.make_node("Mul", ["scores", "zero"], ["zeros"]),
        helper.make_node("Cast", ["zeros"], ["classes"], to=TensorProto.INT64),
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx_whwh"], ["whwh_i"]),
        helper.make_node("Cast", ["whwh_i"], ["whwh"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["fractions", "whwh"], ["boxes1"]),
        helper.make_node("Gather", ["shape", "idx_b"], ["b"]),
        helper.make_node("Concat", ["b", "d4"], ["boxes_shape"], axis=0),
        helper.make_node("Expand", ["boxes1", "boxes_shape"], ["boxes"]),
        helper.make_node("Expand", ["nvalid", "b"], ["num_dets"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_boxseg",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["B", max_dets, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", max_dets]),
            helper.make_tensor_value_info("classes", TensorProto.INT64, ["B", max_dets]),
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["B", max_dets, "Hm", "Wm"]),
            helper.make_tensor_value_info("num_dets", TensorProto.INT64, ["B"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {
        "boxseg.format": "boxseg-onnx", "boxseg.version": "0.1.0", "boxseg.class_names": json.dumps(["thing"]),
        "boxseg.mean": "[0, 0, 0]", "boxseg.std": "[1, 1, 1]", "boxseg.size_divisor": "32",
        "boxseg.mask_stride": "4", "boxseg.max_dets": str(max_dets), "boxseg.preset": "test",
        "boxseg.input_format": "float32 NCHW RGB 0-255", "boxseg.mask_threshold": "0.5",
    }
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class TinyTorchModel(torch.nn.Module):
    """Same computation as the tiny ONNX graph, with the ``inference`` method of the model contract."""

    def __init__(self, max_dets: int = MAX_DETS, n_valid: int = N_VALID) -> None:
        super().__init__()
        self.max_dets, self.n_valid = max_dets, n_valid
        self.register_buffer("fractions", torch.from_numpy(box_fractions(max_dets)))

    def inference(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = images.shape
        prob = torch.sigmoid((F.avg_pool2d(images.mean(1, keepdim=True), 4) - 128.0) / 32.0)
        masks = prob.repeat(1, self.max_dets, 1, 1)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=images.device)
        return {
            "boxes": (self.fractions * scale).expand(b, self.max_dets, 4),
            "scores": masks.mean((2, 3)),
            "classes": torch.zeros(b, self.max_dets, dtype=torch.int64, device=images.device),
            "masks": masks,
            "num_dets": torch.full((b,), self.n_valid, dtype=torch.int64, device=images.device),
        }
