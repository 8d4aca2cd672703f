"""Config system: presets, YAML files, key=value overrides, type checks, round trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from boxseg.train.config import (
    ConfigError,
    InputConfig,
    SolverConfig,
    TrainConfig,
    available_overlays,
    available_presets,
    config_dirs,
    config_file,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_path,
    reads_gt_masks,
    save_config,
    with_overrides,
)

PRESETS = ["boxinst", "condinst", "boxteacher", "boxseg", "boxinst_pc"]


def test_presets_exist_and_differ_only_where_meant():
    assert {"boxinst", "condinst", "boxteacher", "boxseg", "boxinst_pc"} <= set(available_presets())
    box, cond = load_config("boxinst"), load_config("condinst")
    assert box.preset == "boxinst" and cond.preset == "condinst"
    assert box.loss.mask_loss == "boxinst" and cond.loss.mask_loss == "condinst"
    # Only the mask-supervised upper bound reads GT masks.
    assert not reads_gt_masks(box) and reads_gt_masks(cond)
    assert box.model == cond.model and box.solver == cond.solver and box.input == cond.input
    assert box.model.backbone == "efficientnet_lite0" and box.model.pretrained is True


def test_dataclass_defaults_and_presets_are_the_spec_values_and_the_overlay_the_small_data_values():
    d = TrainConfig()
    assert d.input.train_scales == (640, 672, 704, 736, 768, 800) and d.input.train_max_size == 1333
    assert d.solver == SolverConfig()
    assert (d.solver.lr, d.solver.momentum, d.solver.weight_decay, d.solver.warmup_factor) == (0.01, 0.9, 1e-4, 0.001)
    for name in PRESETS:
        p = load_config(name)
        assert p.solver == d.solver and p.input == d.input, name  # docs/method.md "COCO recipe" (3x)
        assert p.model.mask_branch_channels == 16 and p.model.box_score == "vfl", name
        if p.method == "teacher_student":
            assert p.loss.pairwise_warmup_iters == 10000 and p.loss.bottom_pixels_removed == 10, name
            assert (p.loss.mask_sup.lambda_, p.loss.mask_sup.warmup_iters, p.loss.mask_sup.target) == (
                0.5, 10000, "binary"), name
            assert (p.teacher.input.short, p.teacher.input.max) == (800, 1333), name
    small = load_config("boxinst", "synthetic_cpu")
    # The CPU protocol: the bench split at 192 px, the teacher view at the same size.
    assert max(small.input.train_scales) <= 400 and small.input.test_size == small.teacher.input.short == 192
    assert small.solver.max_iter <= 3000 and small.solver.warmup_iters < small.solver.steps[0] < small.solver.max_iter
    assert small.loss.pairwise_warmup_iters < small.solver.steps[0] and small.runtime.threads == 2
    assert small.model.fpn_channels < 256 and small.model.head_convs < 4 and small.model.pretrained is True


@pytest.mark.parametrize("name", PRESETS)
def test_overlay_keeps_what_defines_each_method(name: str):
    base, small = load_config(name), load_config(name, "synthetic_cpu")
    assert small.preset == name
    for section in ("method", "pseudo_labeler", "qam", "bpma", "pc"):
        assert getattr(small, section) == getattr(base, section), section
    # The one method setting it changes, for its short schedules: BoxTeacher's weak student augmentation.
    assert small.student.color_jitter.p == 0.2 and small.student.grayscale.p == small.student.gaussian_blur.p == 0
    assert small.loss.mask_loss == base.loss.mask_loss and small.teacher.source == base.teacher.source
    keep = ("type", "lambda_", "affinity_weight", "target", "weight_exponent")
    assert [getattr(small.loss.mask_sup, k) for k in keep] == [getattr(base.loss.mask_sup, k) for k in keep]
    assert small.loss.mask_sup.warmup_iters < small.solver.max_iter


def test_overlays_are_not_presets_and_resolve_by_name(tmp_path):
    assert "synthetic_cpu" in available_overlays() and "synthetic_cpu" not in available_presets()
    with pytest.raises(ConfigError, match="'synthetic_cpu' .* is a config overlay, not a preset.*--config"):
        load_config("synthetic_cpu")
    assert config_file("synthetic_cpu") == config_file("synthetic_cpu.yaml") == preset_path("boxinst").with_name(
        "synthetic_cpu.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("solver: {lr: 0.03}\n")
    assert config_file(own) == own and load_config("boxinst", str(own)).solver.lr == 0.03
    with pytest.raises(ConfigError, match=r"'synthetic_cp': no such file.*overlays: .*synthetic_cpu.*did you mean"):
        load_config("boxinst", "synthetic_cp")


def test_shipped_configs_are_found_beside_the_package_and_a_user_folder_comes_first(tmp_path, monkeypatch):
    import boxseg.train.config as config_module

    # <boxseg.train folder>/../configs: the repository's configs/ (editable) and boxseg/configs (installed wheel).
    shipped = Path(config_module.__file__).resolve().parent.parent / "configs"
    assert config_dirs()[0] == shipped and preset_path("boxseg") == shipped / "boxseg.yaml"
    (tmp_path / "boxinst.yaml").write_text("method: supervised\nsolver: {lr: 0.5}\n")
    (tmp_path / "my_method.yaml").write_text("method: supervised\n")
    monkeypatch.setenv("BOXSEG_CONFIG_DIR", str(tmp_path))
    assert config_dirs() == [tmp_path, shipped]
    assert "my_method" in available_presets() and load_config("boxinst").solver.lr == 0.5


def test_mask_sup_has_one_home_with_a_lambda_alias(tmp_path):
    cfg = load_config("boxseg", overrides=["loss.mask_sup.lambda=1.0", "loss.mask_sup.warmup_iters=7"])
    assert (cfg.loss.mask_sup.lambda_, cfg.loss.mask_sup.warmup_iters) == (1.0, 7)
    assert load_config("boxseg", overrides=["loss.mask_sup.lambda_=0.25"]).loss.mask_sup.lambda_ == 0.25
    yml = tmp_path / "alias.yaml"
    yml.write_text("loss:\n  mask_sup: {lambda: 2.0, affinity_weight: 0.1}\n")
    assert load_config("boxseg", yml).loss.mask_sup.lambda_ == 2.0
    d = config_to_dict(load_config("boxseg", yml))
    assert d["loss"]["mask_sup"]["lambda_"] == 2.0 and "lambda" not in d["loss"]["mask_sup"]  # the canonical key
    both = tmp_path / "both.yaml"
    both.write_text("loss:\n  mask_sup: {lambda: 2.0, lambda_: 1.0}\n")
    with pytest.raises(ConfigError, match=r"keys 'loss\.mask_sup\.lambda' and 'loss\.mask_sup\.lambda_' are the same "
                                          r"setting \('lambda' is an alias of 'lambda_'\)"):
        load_config("boxseg", both)
    with pytest.raises(ConfigError, match=r"key 'loss\.mask_sup\.target' got 'hard' \(str\); expected one of "
                                          r"\['binary', 'soft'\]"):
        load_config("boxseg", overrides=["loss.mask_sup.target=hard"])


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
    ("model.backbone=resnet9000", "key 'model.backbone' got 'resnet9000' (str); expected one of ['efficientnet_lite0', 'resnet18',"),
    ("loss.box_score=iou", "key 'loss.box_score' got 'iou' (str); expected one of ['vfl', 'fcos_cls_ctr', None]"),
    ("loss.mask_sup_weight=0.5", "unknown key 'loss.mask_sup_weight'; did you mean 'loss."),
    ("pc.bank_size=0", "invalid value in section 'pc': config keys pc.bank_size"),
    ("solver.optimizer=adam", "expected one of ['sgd']"),
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
                                             "pc.tau=0.7", "runtime.seed=3", "loss.mask_sup.lambda=0.7"])
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



@pytest.mark.parametrize("override, allowed", [
    ("pseudo_labeler=boxcaseg", "one of ['qam', 'bpma', 'sim', 'none']"),  # not implemented: not a choice
    ("pc.bank_scope=global", "one of ['per_gpu']"),
    ("qam.stages=all", "one of ['bqr', 'bqr_qmf', 'full']"),
])
def test_choices_come_from_the_literal_annotations(override: str, allowed: str):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=re.escape(f"key '{key}' got '{value}' (str); expected {allowed}")):
        load_config("boxseg", overrides=[override])


def test_direct_construction_checks_choices_too():
    from boxseg.train.pseudo.config import PCConfig, QAMConfig

    with pytest.raises(ValueError, match=r"config key qam\.stages: got 'all', expected one of \['bqr', 'bqr_qmf', "
                                         r"'full'\]"):
        QAMConfig(stages="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"pc\.bank_scope"):
        PCConfig(bank_scope="global")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="config key pseudo_labeler: got 'boxcaseg'"):
        TrainConfig(pseudo_labeler="boxcaseg")  # type: ignore[arg-type]


def test_with_overrides_takes_typed_values_and_checks_them():
    base = load_config("boxseg", "synthetic_cpu")
    cfg = with_overrides(base, {"solver.max_iter": 40, "input.train_scales": [96, 128], "runtime.progress": False,
                                "loss.mask_sup.lambda": 0.25, "data.train_dir": "/data/with spaces/train"})
    assert cfg.solver.max_iter == 40 and cfg.input.train_scales == (96, 128) and cfg.runtime.progress is False
    assert cfg.loss.mask_sup.lambda_ == 0.25 and cfg.data.train_dir == "/data/with spaces/train"
    assert base.solver.max_iter == 800  # a copy: the base config is unchanged
    # The same values as command-line strings give the same config.
    assert cfg == load_config("boxseg", "synthetic_cpu", [
        "solver.max_iter=40", "input.train_scales=[96, 128]", "runtime.progress=false", "loss.mask_sup.lambda=0.25",
        'data.train_dir="/data/with spaces/train"'])
    for values, message in (({"solver.max_iter": "40"}, "my settings: key 'solver.max_iter' got '40' (str)"),
                            ({"solver.lrr": 0.1}, "my settings: unknown key 'solver.lrr'; did you mean 'solver.lr'?"),
                            ({"solver": 1, "solver.lr": 0.1}, "key 'solver.lr' is inside 'solver', which is given"),
                            ({"model.box_score": "iou"}, "key 'model.box_score' got 'iou'")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            with_overrides(base, values, source="my settings")


def test_input_config_defaults_documented():
    assert InputConfig().size_divisor == 32
