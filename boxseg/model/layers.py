"""Small building blocks shared by the FPN, the FCOS head and the mask branch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from boxseg.model.backbone.norm import gn_groups


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "GN":
        return nn.GroupNorm(gn_groups(channels), channels)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected GN, BN or none, got {kind!r}")


def conv_norm_relu(cin: int, cout: int, norm: str, k: int = 3, std: float | None = 0.01) -> nn.Sequential:
    """conv(k x k) -> norm -> ReLU. The conv has a bias only without a norm; weights ~ N(0, std) when std is
    given (FCOS towers), otherwise Kaiming (mask branch)."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=norm == "none")
    if std is None:
        nn.init.kaiming_uniform_(conv.weight, a=1)
    else:
        nn.init.normal_(conv.weight, std=std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, norm_layer(norm, cout), nn.ReLU(inplace=True))


def locations_for(h: int, w: int, stride: int, device: torch.device, dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """(h*w, 2) image coordinates (x, y) of the centres of a stride-`stride` grid: (j*s + s/2, i*s + s/2)."""
    xs = torch.arange(w, device=device, dtype=dtype) * stride + stride // 2
    ys = torch.arange(h, device=device, dtype=dtype) * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def aligned_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling that keeps pixel centres aligned: output pixel i of a stride-s/f grid sits at image
    coordinate (s/f)*i + s/(2f), exactly where `locations_for` places it (half-pixel convention,
    align_corners=False; the ONNX Resize 'half_pixel' mode)."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)
