"""ResNet-18/34/50/101 returning C3, C4, C5 (strides 8, 16, 32), with torchvision's state-dict key names
(conv1, bn1, layer1.0.conv1, ..., layer2.0.downsample.0/1) so a torchvision ImageNet checkpoint loads from a file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from boxseg.model.backbone.loading import LoadReport, load_into, read_state_dict
from boxseg.model.backbone.norm import make_norm

# depth -> (block type, blocks per stage)
RESNET_STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv(cin, width, 3, stride)
        self.bn1 = make_norm(norm, width)
        self.conv2 = _conv(width, cout, 3)
        self.bn2 = make_norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(_conv(cin, cout, 1, stride), make_norm(norm, cout)) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv(cin, width, 1)
        self.bn1 = make_norm(norm, width)
        self.conv2 = _conv(width, width, 3, stride)  # stride on the 3x3 conv, as torchvision (ResNet v1.5)
        self.bn2 = make_norm(norm, width)
        self.conv3 = _conv(width, cout, 1)
        self.bn3 = make_norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(_conv(cin, cout, 1, stride), make_norm(norm, cout)) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Feature extractor: forward(x) -> [C3, C4, C5]; `out_channels` lists their widths."""

    def __init__(self, depth: int = 50, norm: str = "frozen_bn", width: int = 64, freeze_stem: bool = False) -> None:
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"ResNet depth: expected one of {sorted(RESNET_STAGES)}, got {depth}")
        kind, blocks = RESNET_STAGES[depth]
        block: type[BasicBlock | Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = width
        for i, n in enumerate(blocks):
            stage_width = width * 2**i
            layers = []
            for j in range(n):
                layers.append(block(cin, stage_width, 2 if (j == 0 and i > 0) else 1, norm))
                cin = stage_width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = [width * 2**i * block.expansion for i in (1, 2, 3)]
        self.out_strides = [8, 16, 32]
        self._init_weights()
        if freeze_stem:
            for p in [*self.conv1.parameters(), *self.bn1.parameters()]:
                p.requires_grad_(False)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


def load_pretrained(model: ResNet, path: str | Path, strict: bool = False) -> LoadReport:
    """Load a torchvision-format ResNet checkpoint from a local file. The classifier (fc.*) is ignored; every other
    key mismatch is reported (a warning, or an error with strict=True)."""
    return load_into(model, read_state_dict(path), str(path), ignore_prefixes=("fc.",), strict=strict)
