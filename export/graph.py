"""The module that is exported: the student's whole inference path with NMS as one exportable op.

It reuses the model's modules and its `decode` and `select_and_segment` unchanged, and replaces three things:
- `nms_keep` by the custom op of nms.py (ONNX NonMaxSuppression);
- `CondInst.forward` by `dense_forward` below, the same computation on the same submodules except that the
  input size stays symbolic: `CondInst.forward` stores `image_size=(int(h), int(w))`, and `int()` on a symbolic
  size makes torch.export specialise H and W to the example's values (the box clipping would then use the
  example's size at every input size);
- `DenseOutput.flat` by an equivalent that builds the per-location level/stride/size-of-interest vectors with
  `torch.full` per level instead of `repeat_interleave(torch.tensor(counts))`: with dynamic H and W the counts are
  symbolic, and `torch.tensor(counts)` would freeze the example's counts into the graph (wrong at other sizes)
  and `repeat_interleave` becomes an int64 CumSum that TensorRT does not support.
So the exported graph computes exactly what `CondInst.inference` computes (tested against it).
"""

from __future__ import annotations

import torch
from boxseg.export import nms as _nms
from torch import nn

from boxseg.model.condinst import DenseOutput, FlatDense
from boxseg.model.layers import locations_for

OUTPUT_NAMES = ("boxes", "scores", "classes", "masks", "num_dets")


class _ExportDense(DenseOutput):
    def flat(self) -> FlatDense:
        def cat(maps: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

        locs = torch.cat(self.locations, dim=0)

        def per_level(values) -> torch.Tensor:
            return torch.cat([torch.full((loc.shape[0],), v, dtype=locs.dtype, device=locs.device)
                              for loc, v in zip(self.locations, values)])

        return FlatDense(
            cls_logits=cat(self.cls_logits),
            box_reg=cat(self.box_reg),
            ctrness=cat(self.ctrness)[..., 0],
            params=cat(self.params),
            locations=locs,
            levels=per_level(range(len(self.locations))).to(torch.int64),
            strides=per_level(self.strides),
            soi=per_level(self.soi),
        )


def dense_forward(model: nn.Module, images: torch.Tensor) -> DenseOutput:
    """`CondInst.forward` with symbolic image sizes (see the module docstring)."""
    h, w = images.shape[-2:]
    x = (images - model.pixel_mean) / model.pixel_std
    feats = model.fpn(model.backbone(x))
    cls, box, ctr, params = model.head(feats)
    locations = [locations_for(f.shape[-2], f.shape[-1], s, f.device, f.dtype)
                 for f, s in zip(feats, model.cfg.strides)]
    return _ExportDense(
        cls_logits=cls, box_reg=box, ctrness=ctr, params=params, locations=locations,
        strides=model.cfg.strides, soi=model.cfg.soi_normalizers, mask_feats=model.mask_branch(feats),
        image_size=(h, w),
    )


class ExportModule(nn.Module):
    """images (B, 3, H, W) float32 RGB 0..255 -> (boxes, scores, classes, masks, num_dets), D = max_dets."""

    def __init__(self, model: nn.Module, max_dets: int | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_dets = int(max_dets if max_dets is not None else model.cfg.max_dets)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        dense = dense_forward(m, images)
        cand = m.decode(dense)
        keep = _nms.nms_keep(cand.boxes, cand.scores, cand.classes, m.cfg.num_classes, float(m.cfg.nms_thresh),
                             int(m.cfg.pre_nms_topk))
        det = m.select_and_segment(dense, cand, keep, self.max_dets)
        return det.boxes, det.scores, det.classes, det.masks, det.num_dets
