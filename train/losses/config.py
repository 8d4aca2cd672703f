"""Loss configuration (SPEC §2.2, §3.1-3.3, §16.2 `loss.box_sup`). Plain values so it round-trips through YAML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MASK_LOSSES = ("boxinst", "condinst")


@dataclass
class LossConfig:
    # Detection (FCOS). box_score None = follow ModelConfig.box_score ("vfl" -> varifocal, "fcos_cls_ctr" -> focal).
    box_score: str | None = None
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cls_weight: float = 1.0
    box_weight: float = 1.0
    ctr_weight: float = 1.0
    # Mask losses on at most `max_proposals` positives per image (SPEC §2.6)
    max_proposals: int = 64
    # "boxinst": projection + pairwise from boxes (SPEC §3.2); "condinst": Dice on GT masks (the upper bound)
    mask_loss: str = "boxinst"
    proj_weight: float = 1.0
    pairwise_weight: float = 1.0
    pairwise_kernel: int = 3
    pairwise_dilation: int = 2
    pairwise_theta: float = 2.0
    pairwise_color_thresh: float = 0.3
    pairwise_warmup_iters: int = 10000
    bottom_pixels_removed: int = 10  # COCO annotation artefact (SPEC §3.2); in original-image pixels
    gt_mask_weight: float = 1.0  # Dice on GT masks in the "condinst" mode
    # Teacher pseudo masks (SPEC §3.3), used when targets carry `pseudo_masks`
    mask_sup_weight: float = 0.5  # lambda_mask
    mask_sup_warmup_iters: int = 10000
    mask_sup_target: str = "binary"  # binary (box-cropped, >= 0.5) | soft (box-cropped)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"LossConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if self.box_score not in (None, "vfl", "fcos_cls_ctr"):
            raise bad("box_score", "None, 'vfl' or 'fcos_cls_ctr'")
        if self.mask_loss not in MASK_LOSSES:
            raise bad("mask_loss", f"one of {MASK_LOSSES}")
        if self.mask_sup_target not in ("binary", "soft"):
            raise bad("mask_sup_target", "'binary' or 'soft'")
        if self.pairwise_kernel < 3 or self.pairwise_kernel % 2 == 0:
            raise bad("pairwise_kernel", "an odd integer >= 3")
        for name in ("pairwise_dilation", "max_proposals"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "an integer >= 1")
        for name in ("pairwise_warmup_iters", "mask_sup_warmup_iters", "bottom_pixels_removed"):
            if int(getattr(self, name)) < 0:
                raise bad(name, "an integer >= 0")
        if self.pairwise_theta <= 0:
            raise bad("pairwise_theta", "a positive number")
        for name in ("vfl_alpha", "focal_alpha", "pairwise_color_thresh"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "a number in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"LossConfig: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**d)
