"""Which normalisation a backbone uses: frozen BN for pretrained weights, GroupNorm when trained from scratch."""

from __future__ import annotations

from torch import nn

from boxseg.model.backbone.frozen_bn import FrozenBatchNorm2d
from boxseg.model.config import BACKBONE_NORMS


def resolve_norm(norm: str, pretrained: object) -> str:
    """'auto' -> frozen BN with pretrained weights (docs/method.md "Student network"); GroupNorm without, because
    frozen BN with identity statistics normalises nothing and a randomly initialised deep network then diverges."""
    if norm not in BACKBONE_NORMS:
        raise ValueError(f"ModelConfig.backbone_norm: expected one of {BACKBONE_NORMS}, got {norm!r}")
    if norm != "auto":
        return norm
    return "frozen_bn" if pretrained else "gn"


def gn_groups(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """The largest group count <= max_groups that divides `channels` and leaves >= min_group_size channels per
    group (EfficientNet widths are not multiples of 32; narrow test models must not degenerate to one channel per
    group, which normalises a 1x1 P7 map to zeros)."""
    for g in range(max(1, min(max_groups, channels // min_group_size)), 0, -1):
        if channels % g == 0:
            return g
    return 1


def make_norm(kind: str, channels: int, eps: float = 1e-5) -> nn.Module:
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=eps)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)
    raise ValueError(f"backbone norm: expected one of frozen_bn, bn, gn, got {kind!r}")
