"""Feature pyramid P3-P7 (strides 8..128) on C3-C5; P6/P7 from P5 as in FCOS/CondInst (docs/method.md
"Student network")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _xavier(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], channels: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(_xavier(nn.Conv2d(c, channels, 1)) for c in in_channels)
        self.output = nn.ModuleList(_xavier(nn.Conv2d(channels, channels, 3, padding=1)) for _ in in_channels)
        self.p6 = _xavier(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        self.p7 = _xavier(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        self.out_channels = channels

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """[C3, C4, C5] -> [P3, P4, P5, P6, P7]."""
        inner = self.lateral[-1](feats[-1])
        outs = [self.output[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            # Sizes are multiples of 32, so nearest x2 lands exactly on the finer grid.
            inner = self.lateral[i](feats[i]) + F.interpolate(inner, scale_factor=2.0, mode="nearest")
            outs.insert(0, self.output[i](inner))
        p6 = self.p6(outs[-1])
        p7 = self.p7(F.relu(p6))
        return [*outs, p6, p7]
