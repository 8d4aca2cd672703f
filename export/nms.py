"""Class-aware NMS as one op the ONNX exporter can translate to ONNX NonMaxSuppression.

`CondInst.nms_keep` runs greedy NMS with `boxseg.ops.batched_nms` (data-dependent Python control flow that no
exporter can trace). For export it is replaced by the custom op `boxseg_export::nms_keep`, whose eager kernel is
the same reference computation and whose ONNX translation is:

    class one-hot scores (B, C, K) = onehot(classes) * scores          # padding (score 0) stays 0
    selected (M, 3) = NonMaxSuppression(boxes, scores_bck, max_out=K, iou_threshold, score_threshold=0)
    keep (B, K) = Cast(ScatterND(zeros int32 (B, K), selected[:, [0, 2]], ones), bool)

Per-class scores make NonMaxSuppression compare only boxes of the same class, on the raw coordinates (no class
offset trick, so IoU values are exactly those of the reference). Both sides keep a box when its score is > 0 and
its IoU with every kept higher-scored box of its class is <= iou_threshold. Everything is on TensorRT's ONNX
operator list (ScatterND on INT32; NonMaxSuppression's scalar inputs are constants).
"""

from __future__ import annotations

import torch

from boxseg import ops

OP_NAME = "boxseg_export::nms_keep"


@torch.library.custom_op(OP_NAME, mutates_args=())
def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, num_classes: int,
             iou_threshold: float, max_candidates: int) -> torch.Tensor:
    """(B, K) bool keep mask; boxes (B, K, 4) xyxy, scores (B, K) (0 = padding), classes (B, K) int64."""
    b, k = scores.shape
    groups = torch.arange(b, device=scores.device)[:, None] * num_classes + classes
    cand = torch.nonzero(scores.reshape(-1) > 0).squeeze(1)
    kept = ops.batched_nms(boxes.reshape(-1, 4)[cand], scores.reshape(-1)[cand], groups.reshape(-1)[cand],
                           iou_threshold)
    keep = torch.zeros(b * k, dtype=torch.bool, device=scores.device)
    keep[cand[kept]] = True
    return keep.reshape(b, k)


@nms_keep.register_fake
def _nms_keep_fake(boxes, scores, classes, num_classes, iou_threshold, max_candidates):
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


def nms_keep_onnx(boxes, scores, classes, num_classes: int, iou_threshold: float, max_candidates: int):
    """onnxscript translation of `nms_keep` (registered through `custom_translation_table`)."""
    from onnxscript import opset18 as op

    class_ids = op.Constant(value_ints=list(range(num_classes)))
    class_ids = op.Reshape(class_ids, op.Constant(value_ints=[1, num_classes, 1]))
    onehot = op.Equal(op.Unsqueeze(classes, op.Constant(value_ints=[1])), class_ids)  # (B, C, K) bool
    class_scores = op.Where(onehot, op.Unsqueeze(scores, op.Constant(value_ints=[1])),
                            op.Constant(value_float=0.0))
    selected = op.NonMaxSuppression(
        boxes, class_scores,
        op.Constant(value_ints=[max_candidates]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[0.0]),
    )  # (M, 3): batch, class, box
    batch_box = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # (M, 2)
    zeros = op.ConstantOfShape(op.Shape(scores), value=_int32_scalar(0))
    count = op.Slice(op.Shape(selected), op.Constant(value_ints=[0]), op.Constant(value_ints=[1]))
    ones = op.ConstantOfShape(count, value=_int32_scalar(1))
    return op.Cast(op.ScatterND(zeros, batch_box, ones), to=9)  # 9 = BOOL


def _int32_scalar(value: int):
    import numpy as np
    import onnx.numpy_helper

    return onnx.numpy_helper.from_array(np.array([value], dtype=np.int32))


def translation_table() -> dict:
    """The `custom_translation_table` entry for torch.onnx.export(dynamo=True)."""
    return {torch.ops.boxseg_export.nms_keep.default: nms_keep_onnx,
            torch.ops.aten.repeat_interleave.self_int: repeat_interleave_int_onnx}


def repeat_interleave_int_onnx(self, repeats, dim: int | None = None, output_size: int | None = None):
    """aten::repeat_interleave.self_int (Tensor self, SymInt repeats, int? dim).

    Replaces onnxscript 0.7's translation, whose symbolic-`repeats` branch builds the Expand shape one axis off
    ((r, 1) instead of (1, r)) and fails at run time for batch > 1 (`CondInst.select_and_segment` uses
    `arange(B).repeat_interleave(D)`). Unsqueeze after `dim`, Expand along the new axis, merge the two axes.
    """
    from onnxscript import opset18 as op

    if dim is None:
        self = op.Reshape(self, op.Constant(value_ints=[-1]))
        dim = 0
        rank = 1
    else:
        rank = len(self.shape)
    axis = dim % rank
    unsqueezed = op.Unsqueeze(self, op.Constant(value_ints=[axis + 1]))
    if isinstance(repeats, int):
        reps = op.Constant(value_ints=[repeats])
    else:
        reps = op.Reshape(op.Cast(repeats, to=7), op.Constant(value_ints=[-1]))  # 7 = INT64
    in_shape = op.Shape(unsqueezed)
    target = op.Concat(op.Slice(in_shape, op.Constant(value_ints=[0]), op.Constant(value_ints=[axis + 1])), reps,
                       op.Slice(in_shape, op.Constant(value_ints=[axis + 2]), op.Constant(value_ints=[rank + 1])),
                       axis=0)
    tiled = op.Expand(unsqueezed, target)
    final_shape = op.Concat(op.Slice(op.Shape(self), op.Constant(value_ints=[0]), op.Constant(value_ints=[axis])),
                            op.Constant(value_ints=[-1]),
                            op.Slice(op.Shape(self), op.Constant(value_ints=[axis + 1]),
                                     op.Constant(value_ints=[rank])), axis=0)
    return op.Reshape(tiled, final_shape)
