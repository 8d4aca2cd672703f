"""Loss configuration (docs/method.md "Student network", "Box-supervised mask loss", "Pseudo-mask loss"). Plain
values so it round-trips through YAML.

`LossConfig.mask_sup` (a `MaskSupConfig`) is the one home of the pseudo-mask loss settings (`loss.mask_sup`):
the criterion's default pseudo-mask loss and the teacher-student method both read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

MASK_LOSSES = ("boxinst", "condinst")
MASK_SUP_TYPES = ("dice", "dice+bce")
MASK_SUP_TARGETS = ("binary", "soft")


@dataclass
class MaskSupConfig:
    """`loss.mask_sup`: the quality-aware pseudo-mask loss (BoxSeg Eq. 1 / BT Eq. 2-5).

    `lambda` is a Python keyword, so the field is `lambda_` (the YAML key too); the config loader also accepts
    `lambda` as an alias of it (`KEY_ALIASES`), in YAML files and in overrides (`loss.mask_sup.lambda=1.0`).
    """

    KEY_ALIASES: ClassVar[dict[str, str]] = {"lambda": "lambda_"}

    type: str = "dice"            # dice | dice+bce
    lambda_: float = 0.5          # lambda_mask (BoxSeg Eq. 1); lambda_pixel in BoxTeacher
    warmup_iters: int = 10000     # linear ramp of the whole term (docs/method.md "Pseudo-mask loss")
    weight_exponent: float = 1.0  # w ** exponent (PAIS-style; 1 = BoxSeg)
    affinity_weight: float = 0.0  # BT noise-reduced affinity (0.1 in the boxteacher preset)
    target: str = "binary"        # binary (box-cropped, binarised at tau_pixel) | soft (box-cropped)
    # Used by the teacher-student loss:
    affinity_tau: float = 0.5     # BT Eq. 5 tau_a
    affinity_dilation: int = 2
    tau_pixel: float = 0.5        # binarisation threshold of the Dice target (docs/method.md "Pseudo-mask loss")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"config key loss.mask_sup.{name}: got {getattr(self, name)!r}, expected {expected}")

        if self.type not in MASK_SUP_TYPES:
            raise bad("type", f"one of {list(MASK_SUP_TYPES)}")
        if self.target not in MASK_SUP_TARGETS:
            raise bad("target", f"one of {list(MASK_SUP_TARGETS)}")
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskSupConfig:
        """Build from a plain dict; `lambda` maps to `lambda_` (giving both is an error)."""
        d = dict(d)
        for alias, name in cls.KEY_ALIASES.items():
            if alias in d:
                if name in d:
                    raise ValueError(f"config keys loss.mask_sup.{alias} and loss.mask_sup.{name} are the same "
                                     "setting; give one of them")
                d[name] = d.pop(alias)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"loss.mask_sup: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**d)


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
    # Mask losses on at most `max_proposals` positives per image (docs/method.md "Student network")
    max_proposals: int = 64
    # "boxinst": projection + pairwise from boxes (docs/method.md "Box-supervised mask loss"); "condinst": Dice on
    # GT masks (the upper bound)
    mask_loss: str = "boxinst"
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

    # Keys that used to be flat fields here: the config loader names their new place instead of "unknown key".
    MOVED_KEYS: ClassVar[dict[str, str]] = {"mask_sup_weight": "loss.mask_sup.lambda_",
                                            "mask_sup_warmup_iters": "loss.mask_sup.warmup_iters",
                                            "mask_sup_target": "loss.mask_sup.target"}

    def __post_init__(self) -> None:
        if isinstance(self.mask_sup, dict):  # from_dict / cls(**plain) hand over a plain mapping
            self.mask_sup = MaskSupConfig.from_dict(self.mask_sup)
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"LossConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if self.box_score not in (None, "vfl", "fcos_cls_ctr"):
            raise bad("box_score", "None, 'vfl' or 'fcos_cls_ctr'")
        if self.mask_loss not in MASK_LOSSES:
            raise bad("mask_loss", f"one of {MASK_LOSSES}")
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
            raise bad("mask_sup", "a MaskSupConfig or a mapping of its keys")
        self.mask_sup.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            moved = [f"{k} -> {cls.MOVED_KEYS[k]}" for k in unknown if k in cls.MOVED_KEYS]
            hint = f" (moved: {', '.join(moved)})" if moved else ""
            raise ValueError(f"LossConfig: unknown key(s) {unknown}; expected some of {sorted(known)}{hint}")
        return cls(**d)
