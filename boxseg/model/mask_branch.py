"""CondInst mask branch (docs/method.md "Student network"): P3-P5 refined, brought to stride 8 and summed, a conv
tower, then a projection to C_mask channels at stride 8."""

from __future__ import annotations

import torch
from torch import nn

from boxseg.model.layers import aligned_upsample, conv_norm_relu


class MaskBranch(nn.Module):
    def __init__(self, in_channels: int, width: int, num_convs: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.refine = nn.ModuleList(conv_norm_relu(in_channels, width, norm, std=None) for _ in range(3))
        self.tower = nn.Sequential(*(conv_norm_relu(width, width, norm, std=None) for _ in range(num_convs)))
        self.project = nn.Conv2d(width, out_channels, 1)
        nn.init.kaiming_uniform_(self.project.weight, a=1)
        nn.init.zeros_(self.project.bias)
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """[P3, P4, P5, ...] -> mask features (B, C_mask, H/8, W/8)."""
        x = self.refine[0](feats[0])
        for i in (1, 2):
            x = x + aligned_upsample(self.refine[i](feats[i]), 2**i)
        return self.project(self.tower(x))
