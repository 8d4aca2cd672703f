"""The teacher-student presets load through the engine's config system and select what their docs say."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import boxseg.train.pseudo as pseudo_pkg
import pytest
from boxseg.train.config import TrainConfig, load_config, merge_dict, read_yaml
from boxseg.train.pseudo.config import MaskSupConfig
from boxseg.train.teacher_student import ts_sections

PRESETS = Path(pseudo_pkg.__file__).parent / "presets"


@pytest.mark.parametrize("name", ["boxseg", "boxinst_pc"])
def test_presets_load(name: str):
    cfg = load_config(yaml_path=PRESETS / f"{name}.yaml", overrides=["qam.adaptive_k=false", "pc.placement=random"])
    sec = ts_sections(cfg)
    assert cfg.method == "teacher_student" and sec.pseudo_labeler == "qam"
    assert sec.qam.adaptive_k is False and sec.pc.placement == "random"
    assert sec.mask_sup.lambda_ == 0.5 and sec.mask_sup.warmup_iters == 500
    assert sec.teacher.source == ("ema" if name == "boxseg" else "student")
    assert sec.pc.enabled and sec.teacher.input.augment is False


def test_boxteacher_preset_with_mask_sup_section():
    # TrainConfig has no `mask_sup` section yet: extend it the way the engine would.
    ext = dataclasses.make_dataclass("TSConfig", [("mask_sup", MaskSupConfig,
                                                   dataclasses.field(default_factory=MaskSupConfig))],
                                     bases=(TrainConfig,))
    path = PRESETS / "boxteacher.yaml"
    cfg = merge_dict(ext(), read_yaml(path), source=str(path))
    sec = ts_sections(cfg)
    assert sec.pseudo_labeler == "bpma" and sec.bpma.score == "mcs" and not sec.pc.enabled
    assert sec.mask_sup.affinity_weight == 0.1 and sec.mask_sup.lambda_ == 0.5
