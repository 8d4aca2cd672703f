"""The exportable NMS op and the repeat_interleave translation, each against its PyTorch reference."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from boxseg.export.nms import nms_keep, translation_table
from boxseg.export.trt_support import check_tensorrt_support
from torch import nn
from torch.export import Dim

NUM_CLASSES, IOU = 3, 0.6


def _candidates(b: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clustered boxes (many overlaps near the threshold), 3 classes, a tail of padding (score 0)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(b, 4, 2, generator=g) * 100
    pick = torch.randint(0, 4, (b, k), generator=g)
    xy = torch.gather(centres, 1, pick[..., None].expand(b, k, 2)) + torch.randn(b, k, 2, generator=g) * 4
    wh = 10 + torch.rand(b, k, 2, generator=g) * 20
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)
    scores = torch.rand(b, k, generator=g)
    scores[:, -k // 4:] = 0  # padding rows
    classes = torch.randint(0, NUM_CLASSES, (b, k), generator=g)
    return boxes, scores, classes


class _NMSOnly(nn.Module):
    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return nms_keep(boxes, scores, classes, NUM_CLASSES, IOU, 64)


class _Repeat(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(x.shape[0]).repeat_interleave(x.shape[1])  # symbolic repeats, as the model uses it
        return idx, x.repeat_interleave(2, dim=1)


def _to_onnx(module: nn.Module, args: tuple, dynamic_shapes) -> ort.InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
        prog = torch.onnx.export(ep, args, dynamo=True, opset_version=18, custom_translation_table=translation_table(),
                                 verbose=False)
    proto = prog.model_proto
    onnx.checker.check_model(proto, full_check=True)
    assert check_tensorrt_support(proto) == []
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]), proto


def test_eager_op_equals_the_model_method() -> None:
    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    model = CondInst(ModelConfig.tiny(num_classes=NUM_CLASSES, nms_thresh=IOU))
    for seed in range(3):
        boxes, scores, classes = _candidates(3, 40, seed)
        expected = model.nms_keep(boxes, scores, classes)
        assert torch.equal(nms_keep(boxes, scores, classes, NUM_CLASSES, IOU, 40), expected)
        assert not expected[scores == 0].any()  # padding is never kept
        assert expected.sum() > 0


@pytest.fixture(scope="module")
def nms_session():
    b, k = Dim("b", min=1, max=64), Dim("k", min=2, max=1000)
    args = _candidates(2, 48, 0)
    return _to_onnx(_NMSOnly(), args, ({0: b, 1: k}, {0: b, 1: k}, {0: b, 1: k}))


def test_onnx_nms_matches_the_reference_at_other_shapes(nms_session) -> None:
    session, proto = nms_session
    assert {"NonMaxSuppression", "ScatterND"} <= {n.op_type for n in proto.graph.node}
    for b, k, seed in [(1, 30, 1), (4, 64, 2), (2, 7, 3)]:
        boxes, scores, classes = _candidates(b, k, seed)
        got = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(), "classes": classes.numpy()})[0]
        ref = nms_keep(boxes, scores, classes, NUM_CLASSES, IOU, 64).numpy()
        np.testing.assert_array_equal(got, ref)


def test_repeat_interleave_translation_with_symbolic_repeats() -> None:
    session, _ = _to_onnx(_Repeat(), (torch.zeros(3, 5),), ({0: Dim("n", max=64), 1: Dim("m", max=64)},))
    for shape in [(4, 2), (1, 6), (3, 5)]:
        x = torch.randn(*shape)
        idx, rep = session.run(None, {"x": x.numpy()})
        ref_idx, ref_rep = _Repeat()(x)
        np.testing.assert_array_equal(idx, ref_idx.numpy())
        np.testing.assert_array_equal(rep, ref_rep.numpy())
