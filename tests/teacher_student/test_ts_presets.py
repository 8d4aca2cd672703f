"""The teacher-student presets load through the engine's config system and select what their docs say."""

from __future__ import annotations

import pytest
from boxseg.train.config import load_config
from boxseg.train.teacher_student import ts_sections


@pytest.mark.parametrize("name", ["boxseg", "boxinst_pc"])
def test_presets_load(name: str):
    cfg = load_config(name, overrides=["qam.adaptive_k=false", "pc.placement=random"])
    sec = ts_sections(cfg)
    assert cfg.method == "teacher_student" and sec.pseudo_labeler == "qam"
    assert sec.qam.adaptive_k is False and sec.pc.placement == "random"
    # docs/method.md "Pseudo-mask loss": lambda 0.5 over a 10k-iteration ramp; the method reads the one
    # loss.mask_sup section.
    assert sec.mask_sup is cfg.loss.mask_sup
    assert sec.mask_sup.lambda_ == 0.5 and sec.mask_sup.warmup_iters == 10000
    assert sec.teacher.source == ("ema" if name == "boxseg" else "student")
    assert sec.pc.enabled and sec.teacher.input.augment is False


def test_boxteacher_preset_has_its_affinity_term():
    cfg = load_config("boxteacher")
    sec = ts_sections(cfg)
    assert sec.pseudo_labeler == "bpma" and sec.bpma.score == "mcs" and not sec.pc.enabled
    assert sec.mask_sup.affinity_weight == 0.1 and sec.mask_sup.lambda_ == 0.5
    assert (sec.teacher.ema_momentum, sec.teacher.input.short, sec.teacher.input.max) == (0.999, 800, 1333)


def test_synthetic_cpu_overlay_scales_the_teacher_student_keys():
    cfg = load_config("boxseg", "synthetic_cpu")
    sec = ts_sections(cfg)
    assert sec.mask_sup.warmup_iters < cfg.solver.max_iter <= 3000
    assert sec.mask_sup.lambda_ == 0.5 and sec.qam.stages == "full"  # the method's own settings are untouched
    assert 0.99 <= sec.teacher.ema_momentum < 0.999
    assert sec.teacher.input.short <= 352
    # weak student augmentation for short schedules, the colour-jitter magnitudes of the preset kept
    assert (sec.student.color_jitter.p, sec.student.grayscale.p, sec.student.gaussian_blur.p) == (0.2, 0.0, 0.0)
    assert sec.student.color_jitter.brightness == 0.4
