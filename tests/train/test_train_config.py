"""Config system: presets, YAML files, key=value overrides, type checks, round trips."""

from __future__ import annotations

import pytest
import yaml
from boxseg.train.config import (
    ConfigError,
    InputConfig,
    SolverConfig,
    TrainConfig,
    available_presets,
    config_from_dict,
    config_to_dict,
    load_config,
    reads_gt_masks,
    save_config,
)


def test_presets_exist_and_differ_only_where_meant():
    assert {"boxinst", "condinst"} <= set(available_presets())
    box, cond = load_config("boxinst"), load_config("condinst")
    assert box.preset == "boxinst" and cond.preset == "condinst"
    assert box.loss.mask_loss == "boxinst" and cond.loss.mask_loss == "condinst"
    # Only the mask-supervised upper bound reads GT masks.
    assert not reads_gt_masks(box) and reads_gt_masks(cond)
    assert box.model == cond.model and box.solver == cond.solver and box.input == cond.input
    assert box.model.backbone == "efficientnet_lite0" and box.model.pretrained is True


def test_dataclass_defaults_are_the_coco_values_and_presets_the_small_data_values():
    d = TrainConfig()
    assert d.input.train_scales == (640, 672, 704, 736, 768, 800) and d.input.train_max_size == 1333
    assert d.solver == SolverConfig()
    assert (d.solver.lr, d.solver.momentum, d.solver.weight_decay, d.solver.warmup_factor) == (0.01, 0.9, 1e-4, 0.001)
    p = load_config("boxinst")
    assert max(p.input.train_scales) <= 400 and p.input.test_size == 320


def test_overrides_are_typed_and_applied_in_order(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("solver: {lr: 0.05, steps: [10, 20]}\ninput: {hflip_prob: 0.0}\n")
    cfg = load_config("boxinst", extra, ["solver.lr=0.02", "input.train_scales=[256, 320]",
                                         "model.pretrained=false", "solver.clip_grad_norm=5"])
    assert cfg.solver.lr == 0.02  # the override wins over the YAML file
    assert cfg.solver.steps == (10, 20) and isinstance(cfg.solver.steps, tuple)
    assert cfg.input.hflip_prob == 0.0
    assert cfg.input.train_scales == (256, 320)
    assert cfg.model.pretrained is False
    assert cfg.solver.clip_grad_norm == 5.0 and isinstance(cfg.solver.clip_grad_norm, float)  # int -> float


@pytest.mark.parametrize("override, message", [
    ("solver.lrr=0.1", "did you mean 'solver.lr'"),
    ("solvr.lr=0.1", "did you mean 'solver'"),
    ("solver.lr=fast", "key 'solver.lr' got 'fast' (str); expected float"),
    ("solver.max_iter=1.5", "expected int"),
    ("solver.amp=yes please", "expected bool"),
    ("input.train_scales=[256, x]", "key 'input.train_scales'"),
    ("model.backbone=resnet9000", "ModelConfig.backbone"),
    ("solver.optimizer=adam", "expected Literal['sgd']"),
    ("solver=3", "expected SolverConfig"),
    ("no_equals_sign", "expected key=value"),
])
def test_bad_overrides_name_key_value_and_expected_type(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("boxinst", overrides=[override])
    assert message in str(err.value)


def test_unknown_preset_suggests_close_name():
    with pytest.raises(ConfigError, match="unknown preset 'boxinstt'.*did you mean 'boxinst'"):
        load_config("boxinstt")


def test_bad_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config("boxinst", bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("solver:\n  warmup_iter: 5\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: unknown key 'solver.warmup_iter'; did you mean"):
        load_config("boxinst", wrong)


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config("condinst", overrides=["solver.steps=[5, 7]", "model.pixel_mean=[1, 2, 3]",
                                             "pc.tau=0.7", "runtime.seed=3"])
    d = config_to_dict(cfg)
    assert d["solver"]["steps"] == [5, 7]  # plain containers only
    assert config_from_dict(d) == cfg
    save_config(cfg, tmp_path / "run" / "config.yaml")
    loaded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config_from_dict(loaded) == cfg


def test_teacher_student_sections_are_part_of_the_config():
    cfg = load_config("boxinst", overrides=["qam.k=5", "teacher.ema_momentum=0.99"])
    assert cfg.qam.k == 5 and cfg.teacher.ema_momentum == 0.99
    assert cfg.pseudo_labeler == "none"  # the supervised presets use no teacher
    with pytest.raises(ConfigError, match="pseudo_labeler"):
        load_config("boxinst", overrides=["pseudo_labeler=magic"])


def test_input_config_defaults_documented():
    assert InputConfig().size_divisor == 32
