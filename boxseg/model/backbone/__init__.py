"""Backbones returning [C3, C4, C5] (strides 8, 16, 32) with an `out_channels` list."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from boxseg.model.backbone.efficientnet import EfficientNetLite0
from boxseg.model.backbone.efficientnet import load_pretrained as load_efficientnet
from boxseg.model.backbone.loading import LoadReport
from boxseg.model.backbone.norm import resolve_norm
from boxseg.model.backbone.resnet import ResNet
from boxseg.model.backbone.resnet import load_pretrained as load_resnet
from boxseg.model.config import ModelConfig

__all__ = ["EfficientNetLite0", "LoadReport", "ResNet", "build_backbone"]


def build_backbone(cfg: ModelConfig) -> tuple[nn.Module, LoadReport | None]:
    """Build the configured backbone and load its pretrained weights. Returns (backbone, load report or None).

    A missing or shape-mismatched key raises (half a pretrained backbone is a silent accuracy bug); unexpected
    keys are reported with a warning.
    """
    norm = resolve_norm(cfg.backbone_norm, cfg.pretrained)
    pretrained = cfg.pretrained
    report: LoadReport | None = None
    if cfg.backbone == "efficientnet_lite0":
        model: nn.Module = EfficientNetLite0(norm=norm, freeze_stem=cfg.freeze_stem)
        if pretrained:
            path = None if pretrained is True else Path(str(pretrained))
            report = load_efficientnet(model, path)  # type: ignore[arg-type]
    else:
        depth = int(cfg.backbone.removeprefix("resnet"))
        model = ResNet(depth, norm=norm, width=cfg.resnet_width, freeze_stem=cfg.freeze_stem)
        if pretrained is True:
            raise ValueError(
                f"ModelConfig.pretrained: {cfg.backbone} has no built-in weights (nothing is downloaded); "
                "give the path of a local torchvision checkpoint, e.g. resnet50-0676ba61.pth, or False"
            )
        if pretrained:
            report = load_resnet(model, str(pretrained))  # type: ignore[arg-type]
    if report is not None and (report.missing or report.shape_mismatch):
        raise ValueError(f"ModelConfig.pretrained: the checkpoint does not fit {cfg.backbone}: {report.summary()}")
    return model, report
