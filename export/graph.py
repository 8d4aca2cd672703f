"""The module that is exported: the student's whole inference path with NMS as one exportable op.

It runs the model's own `forward`, `decode` and `select_and_segment` unchanged and replaces only `nms_keep` by the
custom op of nms.py (ONNX NonMaxSuppression). `CondInst.forward` and `DenseOutput.flat` are written to keep the
input size symbolic under torch.export (no `int()` on sizes, per-level `torch.full` instead of
`torch.tensor(counts)`), so the exported graph computes exactly what `CondInst.inference` computes (tested
against it) at every input size.
"""

from __future__ import annotations

import torch
from boxseg.export import nms as _nms
from torch import nn

from boxseg.contract import OUTPUT_NAMES  # noqa: F401  (the graph's output names; re-exported for export/)


class ExportModule(nn.Module):
    """images (B, 3, H, W) float32 RGB 0..255 -> (boxes, scores, classes, masks, num_dets), D = max_dets."""

    def __init__(self, model: nn.Module, max_dets: int | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_dets = int(max_dets if max_dets is not None else model.cfg.max_dets)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        dense = m(images)
        cand = m.decode(dense)
        keep = _nms.nms_keep(cand.boxes, cand.scores, cand.classes, m.cfg.num_classes, float(m.cfg.nms_thresh),
                             int(m.cfg.pre_nms_topk))
        det = m.select_and_segment(dense, cand, keep, self.max_dets)
        return det.boxes, det.scores, det.classes, det.masks, det.num_dets
