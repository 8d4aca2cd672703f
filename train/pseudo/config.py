"""Config dataclasses for the teacher-student parts (keys and defaults: docs/method.md "Configuration keys").

The engine composes these into `TrainConfig` as the sections `teacher`, `student`, `qam`, `bpma`, `sim` and `pc`
(`TrainConfig.pseudo_labeler` chooses the labeller). `loss.mask_sup` is `MaskSupConfig`, which lives with the loss
config (`boxseg.train.losses.config`, the field `LossConfig.mask_sup`) and is re-exported here.
Every field has its documented default; choice fields are `Literal`s (the config loader checks them from the
annotation). Construction validates and raises a ValueError naming the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from boxseg.train.losses.config import MaskSupConfig

from boxseg.config import check_choices

__all__ = ["BPMAConfig", "ColorJitterConfig", "GaussianBlurConfig", "GrayscaleConfig", "MaskSupConfig", "PCConfig",
           "QAMConfig", "SIMConfig", "StudentAugConfig", "TeacherConfig", "TeacherInputConfig"]


def _range(section: str, obj: object, name: str, lo: float, hi: float) -> None:
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"config key {section}.{name}: got {value!r}, expected a number in [{lo}, {hi}]")


@dataclass
class TeacherInputConfig:
    short: int = 800
    max: int = 1333
    augment: bool = False  # never perturbed (docs/method.md "Views"); True is rejected by validate()


@dataclass
class TeacherConfig:
    input: TeacherInputConfig = field(default_factory=TeacherInputConfig)
    ema_momentum: float = 0.999
    # m_t = min(m, 1 - 1/(t+1)) (docs/method.md "EMA teacher"); false: constant m from the first update.
    ema_warmup: bool = True
    # ema: an EMA teacher labels the batch (boxteacher, boxseg). student: no teacher; the student labels its own
    # teacher view with QAM only to feed copy-paste, and only pasted tutors get a pseudo-mask loss (BoxInst + PC,
    # BoxSeg Table 6).
    source: Literal["ema", "student"] = "ema"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choices(self, "config key teacher.")
        _range("teacher", self, "ema_momentum", 0.0, 1.0)
        if self.input.augment:
            raise ValueError("config key teacher.input.augment: got True, expected False (the teacher view has no "
                             "perturbation, docs/method.md 'Views'; teacher-view augmentation is not implemented)")
        if self.input.short <= 0 or self.input.max < self.input.short:
            raise ValueError(f"config key teacher.input: got short={self.input.short}, max={self.input.max}, "
                             "expected 0 < short <= max")


@dataclass
class ColorJitterConfig:
    p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1


@dataclass
class GrayscaleConfig:
    p: float = 0.2


@dataclass
class GaussianBlurConfig:
    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)


@dataclass
class StudentAugConfig:
    """`student`, photometric part (drives `boxseg.train.photometric`).

    The geometric keys of the student view live in the engine's `InputConfig`, which draws the student view, with
    the same defaults: `student.scales` = `input.train_scales`, `student.max_size` = `input.train_max_size`,
    `student.hflip` = `input.hflip_prob` (one source of truth for the student geometry).
    """

    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    grayscale: GrayscaleConfig = field(default_factory=GrayscaleConfig)
    gaussian_blur: GaussianBlurConfig = field(default_factory=GaussianBlurConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for sub, name in ((self.color_jitter, "color_jitter"), (self.grayscale, "grayscale"),
                          (self.gaussian_blur, "gaussian_blur")):
            _range(f"student.{name}", sub, "p", 0.0, 1.0)
        _range("student.color_jitter", self.color_jitter, "hue", 0.0, 0.5)
        for name in ("brightness", "contrast", "saturation"):
            _range("student.color_jitter", self.color_jitter, name, 0.0, 1.0)
        lo, hi = self.gaussian_blur.sigma
        if not 0 < lo <= hi:
            raise ValueError(f"config key student.gaussian_blur.sigma: got {self.gaussian_blur.sigma!r}, "
                             "expected (lo, hi) with 0 < lo <= hi")


@dataclass
class QAMConfig:
    tau_score: float = 0.5        # box-score gate in Eq. 2 / Eq. 5
    tau_pixel: float = 0.5        # pixel threshold in Eq. 5
    k: int = 10                   # fixed K (used when adaptive_k is false: Table 7 "without adaptive K")
    adaptive_k: bool = True
    k_min: int = 2
    k_max: int = 10
    area_small: float = 1024.0    # 32^2
    area_large: float = 9216.0    # 96^2
    area_frame: Literal["original", "teacher"] = "original"
    k_rounding: Literal["half_up", "floor", "ceil"] = "half_up"
    require_class_match: bool = False
    u_min: float = 0.0
    empty_policy: Literal["skip", "top1"] = "skip"
    gate: Literal["hard", "soft"] = "hard"  # soft: PAIS-style
    soft_gate_power: float = 1.0  # exponent of s in the soft gate
    box_agreement: Literal["off", "gate", "multiply"] = "off"  # BoxCaseg-style
    box_agreement_thresh: float = 0.95
    overlap_resolution: Literal["none", "smaller_wins"] = "none"
    # Table 4 stage switches: "bqr" = top-1 by box-IoU, weight 1; "bqr_qmf" = Eq. 2 fusion, weight 1;
    # "full" = BQR + QMF + MQS (BoxSeg).
    stages: Literal["bqr", "bqr_qmf", "full"] = "full"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choices(self, "config key qam.")
        _range("qam", self, "tau_score", 0.0, 1.0)
        _range("qam", self, "tau_pixel", 0.0, 1.0)
        _range("qam", self, "u_min", 0.0, 1.0)
        if not (1 <= self.k_min <= self.k_max) or self.k < 1:
            raise ValueError(f"config keys qam.k/k_min/k_max: got {self.k}/{self.k_min}/{self.k_max}, "
                             "expected k >= 1 and 1 <= k_min <= k_max")
        if not 0 < self.area_small < self.area_large:
            raise ValueError(f"config keys qam.area_small/area_large: got {self.area_small}/{self.area_large}, "
                             "expected 0 < area_small < area_large")


@dataclass
class BPMAConfig:
    tau_iou: float = 0.5
    tau_c: float = 0.05
    score: Literal["mcs", "cls", "none"] = "mcs"  # none: sort by confidence, weight 1 (Table 4 "BPMA" row)
    tau_pixel: float = 0.5        # τ_m inside MCS (BT Eq. 1)
    mcs_region: Literal["box", "image"] = "box"  # box: predicted box to sort, GT box to weight; image: whole image

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choices(self, "config key bpma.")
        _range("bpma", self, "tau_iou", 0.0, 1.0)
        _range("bpma", self, "tau_c", 0.0, 1.0)


@dataclass
class SIMConfig:
    """SIM's labeller and loss (docs/method.md "SIM"; SIM Sec. 3-4, Table 8)."""

    per_class: int = 10           # L sub-centres per class
    temperature: float = 1.0      # tau of Eq. 1 (text 0.1, Table 8 1.0): measured choice in configs/sim.yaml
    sinkhorn_eps: float = 0.05    # not given by SIM; SwAV's value
    sinkhorn_iters: int = 3
    proto_momentum: float = 0.999
    mu: float = 5.0               # Eq. 6
    alpha: float = 0.5            # Eq. 7
    tau_low: float = 0.3
    tau_high: float = 0.7
    lambda_pseudo: float = 0.5    # Eq. 10's lambda_1
    lambda_paste: float = 1.0     # Eq. 10's lambda_2
    # iou_weighted: Eq. 6 over the teacher's positives; qam: QAM's fused mask (BoxSeg Table 6 "SIM + PC + QAM")
    instance_map: Literal["iou_weighted", "qam"] = "iou_weighted"
    max_positives: int = 64       # per GT, the best-overlapping ones (bounds the dynamic-head work)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choices(self, "config key sim.")
        for name in ("alpha", "tau_low", "tau_high", "proto_momentum"):
            _range("sim", self, name, 0.0, 1.0)
        if not self.tau_low < self.tau_high:
            raise ValueError(f"config keys sim.tau_low/tau_high: got {self.tau_low}/{self.tau_high}, expected "
                             "tau_low < tau_high")
        if min(self.per_class, self.sinkhorn_iters, self.max_positives) < 1 or min(self.temperature,
                                                                                self.sinkhorn_eps) <= 0:
            raise ValueError("config keys sim.per_class/sinkhorn_iters/max_positives must be >= 1 and "
                             f"sim.temperature/sinkhorn_eps > 0; got {self.per_class}/{self.sinkhorn_iters}/"
                             f"{self.max_positives}, {self.temperature}/{self.sinkhorn_eps}")


@dataclass
class PCConfig:
    enabled: bool = True
    bank_size: int = 80
    bank_scope: Literal["per_gpu"] = "per_gpu"  # one bank per process (the only scope implemented)
    tau: float = 0.8
    nonoverlap: Literal["box_disjoint", "box_coverage", "mask_disjoint"] = "box_disjoint"
    eps_cov: float = 0.05
    reject_border_tutors: bool = False
    pastes_per_image: int = 1
    learner_sampling: Literal["uniform", "inverse_quality"] = "uniform"
    placement: Literal["overlap", "random"] = "overlap"  # random: Table 5 ablation arm
    # random: Table 5 ablation arm; importance: any valid object, drawn in proportion to its w (SIM Eq. 11)
    selection: Literal["quality", "random", "importance"] = "quality"
    rho_min_visible: float = 0.5
    min_visible_frac: float = 0.0  # drop an occluded object when its visible fraction <= this
    max_tries: int = 10
    blend: Literal["hard", "feather"] = "hard"
    # box_minus_paste (default): trim the GT box only where the tutor covers whole rows/columns at its edges; the
    # GT box is the one exact label. mask: tight box of the imperfect pseudo mask (IoU ~0.85 with the GT box, so
    # it corrupts a box label per paste); keep: the old box. mask and keep are ablation arms.
    box_update: Literal["box_minus_paste", "mask", "keep"] = "box_minus_paste"
    tutor_flip: float = 0.5       # probability of a random h-flip of the tutor
    mask_thresh: float = 0.5      # binarisation of pseudo masks for the bank and the overlap tests

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choices(self, "config key pc.")
        _range("pc", self, "rho_min_visible", 0.0, 1.0)
        _range("pc", self, "min_visible_frac", 0.0, 1.0)
        _range("pc", self, "tutor_flip", 0.0, 1.0)
        if self.bank_size < 1 or self.pastes_per_image < 0 or self.max_tries < 1:
            raise ValueError(f"config keys pc.bank_size/pastes_per_image/max_tries: got {self.bank_size}/"
                             f"{self.pastes_per_image}/{self.max_tries}, expected >= 1 / >= 0 / >= 1")

