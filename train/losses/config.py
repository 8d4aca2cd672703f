"""Loss configuration (docs/method.md "Student network", "Box-supervised mask loss", "Pseudo-mask loss"). Plain
values so it round-trips through YAML.

`LossConfig.mask_sup` (a `MaskSupConfig`) is the one home of the pseudo-mask loss settings (`loss.mask_sup`):
the criterion's default pseudo-mask loss and the teacher-student method both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from boxseg.config import check_choices


@dataclass
class MaskSupConfig:
    """`loss.mask_sup`: the quality-aware pseudo-mask loss (BoxSeg Eq. 1 / BT Eq. 2-5).

    `lambda` is a Python keyword, so the field is `lambda_` (the YAML key too); the config loader also accepts
    `lambda` as an alias of it (`KEY_ALIASES`), in YAML files and in overrides (`loss.mask_sup.lambda=1.0`).
    """

    KEY_ALIASES: ClassVar[dict[str, str]] = {"lambda": "lambda_"}

    type: Literal["dice", "dice+bce"] = "dice"
    lambda_: float = 0.5          # lambda_mask (BoxSeg Eq. 1); lambda_pixel in BoxTeacher
    warmup_iters: int = 10000     # linear ramp of the whole term (docs/method.md "Pseudo-mask loss")
    weight_exponent: float = 1.0  # w ** exponent (PAIS-style; 1 = BoxSeg)
    affinity_weight: float = 0.0  # BT noise-reduced affinity (0.1 in the boxteacher preset)
    target: Literal["binary", "soft"] = "binary"  # binary: box-cropped, binarised at tau_pixel; soft: box-cropped
    # Used by the teacher-student loss:
    affinity_tau: float = 0.5     # BT Eq. 5 tau_a
    affinity_dilation: int = 2
    tau_pixel: float = 0.5        # binarisation threshold of the Dice target (docs/method.md "Pseudo-mask loss")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"config key loss.mask_sup.{name}: got {getattr(self, name)!r}, expected {expected}")

        check_choices(self, "config key loss.mask_sup.")
        if int(self.warmup_iters) < 0:
            raise bad("warmup_iters", "an integer >= 0")
        if int(self.affinity_dilation) < 1:
            raise bad("affinity_dilation", "an integer >= 1")
        for name in ("lambda_", "affinity_weight", "weight_exponent"):
            if float(getattr(self, name)) < 0:
                raise bad(name, "a number >= 0")
        for name in ("affinity_tau", "tau_pixel"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "a number in [0, 1]")


@dataclass
class LossConfig:
    # Detection (FCOS). box_score None = follow ModelConfig.box_score ("vfl" -> varifocal, "fcos_cls_ctr" -> focal).
    box_score: Literal["vfl", "fcos_cls_ctr"] | None = None
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_weight: float = 1.0
    box_weight: float = 1.0
    ctr_weight: float = 1.0
    # Mask losses on at most `max_proposals` positives per image (docs/method.md "Student network")
    max_proposals: int = 64
    # "boxinst": projection + pairwise from boxes (docs/method.md "Box-supervised mask loss"); "condinst": Dice on
    # GT masks (the upper bound)
    mask_loss: Literal["boxinst", "condinst"] = "boxinst"
    proj_weight: float = 1.0
    pairwise_weight: float = 1.0
    pairwise_kernel: int = 3
    pairwise_dilation: int = 2
    pairwise_theta: float = 2.0
    pairwise_color_thresh: float = 0.3
    pairwise_warmup_iters: int = 10000
    bottom_pixels_removed: int = 10  # COCO annotation artefact; in original-image pixels
    gt_mask_weight: float = 1.0  # Dice on GT masks in the "condinst" mode
    # "condinst" mode on a `boxseg label` dataset: each object's Dice is weighted by its boxseg_quality (BoxSeg
    # Eq. 1 with the label's w). Invalid labels are ignored either way; plain COCO masks carry no quality.
    label_quality_weight: bool = True
    # Teacher pseudo masks (BoxSeg Eq. 1), used when targets carry `pseudo_masks`
    mask_sup: MaskSupConfig = field(default_factory=MaskSupConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"LossConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        check_choices(self, "LossConfig.")
        if self.pairwise_kernel < 3 or self.pairwise_kernel % 2 == 0:
            raise bad("pairwise_kernel", "an odd integer >= 3")
        for name in ("pairwise_dilation", "max_proposals"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "an integer >= 1")
        for name in ("pairwise_warmup_iters", "bottom_pixels_removed"):
            if int(getattr(self, name)) < 0:
                raise bad(name, "an integer >= 0")
        if self.pairwise_theta <= 0:
            raise bad("pairwise_theta", "a positive number")
        for name in ("vfl_alpha", "focal_alpha", "pairwise_color_thresh"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "a number in [0, 1]")
        if not isinstance(self.mask_sup, MaskSupConfig):
            raise bad("mask_sup", "a MaskSupConfig")
        self.mask_sup.validate()
