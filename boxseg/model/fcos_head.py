"""FCOS head with a CondInst controller (docs/method.md "Student network"): shared class and box towers over
P3-P7."""

from __future__ import annotations

import math

import torch
from torch import nn

from boxseg.model.layers import conv_norm_relu

# exp() input cap: keeps a wild early prediction finite (e^12 * stride is far beyond any image).
_MAX_LOG_DIST = 12.0


class FCOSHead(nn.Module):
    """Per level: class logits (B,C,h,w), box distances l,t,r,b in pixels (B,4,h,w), centerness logit (B,1,h,w)
    and controller parameters (B,P,h,w).

    Box distances are exp(scale_l * x) * stride_l with a learnable per-level scale (FCOS): positive by
    construction, and a zero-initialised regressor starts at a box of one stride around each location.
    """

    def __init__(self, channels: int, num_classes: int, num_convs: int, norm: str, num_params: int,
                 strides: tuple[int, ...], prior_prob: float = 0.01) -> None:
        super().__init__()
        self.strides = strides
        self.cls_tower = nn.Sequential(*(conv_norm_relu(channels, channels, norm) for _ in range(num_convs)))
        self.bbox_tower = nn.Sequential(*(conv_norm_relu(channels, channels, norm) for _ in range(num_convs)))
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(channels, 1, 3, padding=1)
        self.controller = nn.Conv2d(channels, num_params, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        for conv in (self.cls_logits, self.bbox_pred, self.ctrness, self.controller):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: list[torch.Tensor]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        cls, box, ctr, params = [], [], [], []
        for i, f in enumerate(feats):
            c = self.cls_tower(f)
            b = self.bbox_tower(f)
            cls.append(self.cls_logits(c))
            reg = (self.scales[i] * self.bbox_pred(b)).clamp(max=_MAX_LOG_DIST)
            box.append(torch.exp(reg) * self.strides[i])
            ctr.append(self.ctrness(b))
            params.append(self.controller(b))
        return cls, box, ctr, params
