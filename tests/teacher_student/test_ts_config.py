"""Every key of docs/method.md "Configuration keys" for QAM, PC and BPMA exists with its default, and bad values
are rejected."""

from __future__ import annotations

import dataclasses

import pytest
from boxseg.train.pseudo.config import (
    BPMAConfig,
    MaskSupConfig,
    PCConfig,
    QAMConfig,
    StudentAugConfig,
    TeacherConfig,
)

from boxseg.config import from_dict

DEFAULT_QAM = {"tau_score": 0.5, "tau_pixel": 0.5, "k": 10, "adaptive_k": True, "k_min": 2, "k_max": 10,
            "area_small": 1024, "area_large": 9216, "area_frame": "original", "k_rounding": "half_up",
            "require_class_match": False, "u_min": 0.0, "empty_policy": "skip", "gate": "hard",
            "box_agreement": "off", "box_agreement_thresh": 0.95, "overlap_resolution": "none"}
DEFAULT_PC = {"enabled": True, "bank_size": 80, "bank_scope": "per_gpu", "tau": 0.8, "nonoverlap": "box_disjoint",
           "eps_cov": 0.05, "reject_border_tutors": False, "pastes_per_image": 1, "learner_sampling": "uniform",
           "placement": "overlap", "selection": "quality", "rho_min_visible": 0.5, "min_visible_frac": 0.0,
           "max_tries": 10, "blend": "hard", "box_update": "box_minus_paste"}
DEFAULT_BPMA = {"tau_iou": 0.5, "tau_c": 0.05, "score": "mcs"}


@pytest.mark.parametrize("cls, expected", [(QAMConfig, DEFAULT_QAM), (PCConfig, DEFAULT_PC),
                                           (BPMAConfig, DEFAULT_BPMA)])
def test_spec_keys_and_defaults(cls, expected):
    cfg = cls()
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    cfg.validate()


def test_teacher_student_mask_sup_defaults():
    t = TeacherConfig()
    assert (t.input.short, t.input.max, t.input.augment, t.ema_momentum) == (800, 1333, False, 0.999)
    s = StudentAugConfig()
    assert dataclasses.astuple(s.color_jitter) == (0.8, 0.4, 0.4, 0.4, 0.1)
    assert s.grayscale.p == 0.2 and s.gaussian_blur.p == 0.5 and tuple(s.gaussian_blur.sigma) == (0.1, 2.0)
    m = MaskSupConfig()
    assert (m.type, m.lambda_, m.warmup_iters, m.weight_exponent, m.affinity_weight, m.target) == (
        "dice", 0.5, 10000, 1.0, 0.0, "binary")
    assert from_dict(MaskSupConfig, {"lambda": 1.0}, source="test").lambda_ == 1.0
    for c in (t, s, m):
        c.validate()


@pytest.mark.parametrize("cls, kwargs, key", [(QAMConfig, {"empty_policy": "never"}, "qam.empty_policy"),
                                              (QAMConfig, {"k_min": 5, "k_max": 3}, "qam.k"),
                                              (PCConfig, {"placement": "near"}, "pc.placement"),
                                              (BPMAConfig, {"score": "iou"}, "bpma.score"),
                                              (MaskSupConfig, {"target": "hard"}, "loss.mask_sup.target"),
                                              (TeacherConfig, {"ema_momentum": 1.5}, "teacher.ema_momentum"),
                                              (TeacherConfig, {"source": "peer"}, "teacher.source")])
def test_bad_values_name_the_key(cls, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cls(**kwargs)
