"""`boxseg bench train --profile` and the stage timers it reads (boxseg.train.profile)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from boxseg.bench.profile import STAGES, add_ratios, stage_table, summarize_preset
from boxseg.train import profile as P
from click.testing import CliRunner

from boxseg.cli import main

TINY_MODEL = ["model.backbone=resnet18", "model.pretrained=false", "model.resnet_width=16", "model.freeze_stem=false",
              "model.fpn_channels=32", "model.head_convs=1", "model.mask_branch_width=32", "model.mask_branch_convs=1",
              "model.mask_branch_norm=GN", "model.pre_nms_topk=200", "model.max_dets=20"]


def fake_clock(profiler: P.StepProfiler, times_ns: list[int]) -> None:
    ticks = iter(times_ns)
    profiler._now = lambda: next(ticks)  # type: ignore[method-assign]


def test_stage_is_a_shared_no_op_when_no_profiler_is_installed() -> None:
    assert P.stage("anything") is P.stage("other")
    with P.stage("x"):
        pass
    P.stage_begin("y")  # no profiler: nothing to open or close
    P.stage_end("y")


def test_times_are_exclusive_and_add_up_to_the_step() -> None:
    prof = P.StepProfiler()
    # step start 0; enter a at 10; enter b at 15; leave b at 45; leave a at 50; enter a again at 60, leave at 61;
    # step end at 100.
    fake_clock(prof, [0, 10, 15, 45, 50, 60, 61, 100])
    with P.profiling(prof), prof.step():
        with P.stage("a"), P.stage("b"):
            pass
        with P.stage("a"):
            pass
    (step,) = prof.steps
    ns = 1e-6
    assert step == pytest.approx({"other": (10 + 10 + 39) * ns, "a": (5 + 5 + 1) * ns, "b": 30 * ns,
                                  "step": 100 * ns})
    assert sum(v for k, v in step.items() if k != "step") == pytest.approx(step["step"])


def test_begin_end_warmup_steps_and_errors() -> None:
    prof = P.StepProfiler()
    fake_clock(prof, [0, 1, 2, 3, 0, 4, 9, 10])
    with P.profiling(prof):
        with prof.step(record=False), P.stage("a"):  # warm-up: timed, not kept
            pass
        with prof.step():
            P.stage_begin("c")
            P.stage_end("c")
        assert P.stage("outside a step") is P.stage("z")  # between steps nothing is timed
        with pytest.raises(RuntimeError, match="already installed"), P.profiling(P.StepProfiler()):
            pass
    assert prof.steps == [pytest.approx({"other": 5e-6, "c": 5e-6, "step": 10e-6})]
    prof2 = P.StepProfiler()
    with P.profiling(prof2), prof2.step():
        P.stage_begin("c")
        with pytest.raises(RuntimeError, match="open stage is 'c'"):
            P.stage_end("d")
        with pytest.raises(RuntimeError, match="do not nest"), prof2.step():
            pass
    assert P._active is None


def test_summary_rows_shares_and_ratio_to_boxinst() -> None:
    steps = [{"data": 1.0, "backward": 6.0, "other": 1.0, "step": 8.0},
             {"data": 3.0, "backward": 6.0, "other": 1.0, "step": 10.0},
             {"data": 2.0, "backward": 8.0, "other": 2.0, "step": 12.0}]
    base = summarize_preset("boxinst", steps, [])
    assert base["step_ms"] == 10.0 and base["data"] == 2.0 and base["backward"] == 6.0
    assert base["compute_ms"] == 7.0  # median of 7, 7, 10
    assert base["backward_share"] == pytest.approx(0.6) and base["ema"] == 0.0
    ts_steps = [dict(s, teacher_forward=4.0, step=s["step"] + 4.0) for s in steps]
    ts = summarize_preset("boxseg", ts_steps, [{"pseudo_valid_frac": 0.5, "pastes_per_image": 1.0},
                                               {"pseudo_valid_frac": float("nan"), "pastes_per_image": 0.0}])
    assert ts["pseudo_valid_frac"] == 0.5 and ts["pastes_per_image"] == 0.5
    summary = add_ratios([base, ts])
    assert base["x_boxinst"] == 1.0 and ts["x_boxinst"] == pytest.approx(1.4)
    assert summary["x_boxinst"]["boxseg"] == pytest.approx(1.4) and summary["target_ratio"] == 1.4
    table = stage_table([base, ts])
    assert "| teacher_forward | 0 | 0.0 | 4.00 | 28.6 |" in table and "| ema |" not in table


def test_unlisted_stage_names_are_kept() -> None:
    row = summarize_preset("boxinst", [{"new_stage": 2.0, "step": 2.0}], [])
    assert row["new_stage"] == 2.0 and "new_stage" not in STAGES


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_profile")
    r = CliRunner().invoke(main, ["bench", "train", "--profile", "--presets", "boxseg,condinst", "--batch", "2",
                                  "--imgsz", "64", "--iters", "2", "--warmup", "1", "--threads", "1",
                                  "--out", str(out), "--json", *TINY_MODEL], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out


def test_profile_report(report: tuple[dict, Path]) -> None:
    doc, out = report
    for suffix in ("json", "csv", "md", "png"):
        assert (out / f"train_profile.{suffix}").stat().st_size > 0
    rows = {r["preset"]: r for r in doc["rows"]}
    assert list(rows) == ["boxinst", "boxseg", "condinst"]  # boxinst added: the ratios are to it
    assert rows["boxinst"]["x_boxinst"] == 1.0
    for r in rows.values():
        assert r["steps"] == 2 and r["step_ms"] > 0
        assert r["student_forward"] > 0 and r["backward"] > 0 and r["optimizer"] > 0 and r["data"] > 0
    # Teacher-student stages appear only in the teacher-student preset; the GT-mask loss only in condinst.
    assert rows["boxseg"]["teacher_forward"] > 0 and rows["boxseg"]["ema"] > 0
    assert rows["boxinst"]["teacher_forward"] == 0 and rows["condinst"]["ema"] == 0
    assert rows["condinst"]["loss_gt_mask"] > 0 and rows["condinst"]["loss_pairwise"] == 0
    assert rows["boxseg"]["pseudo_valid_frac"] is not None and rows["boxinst"]["pseudo_valid_frac"] is None
    assert doc["summary"]["x_boxinst"]["boxseg"] == pytest.approx(rows["boxseg"]["x_boxinst"])
    assert doc["meta"]["presets"] == ["boxinst", "boxseg", "condinst"] and doc["meta"]["stages"] == STAGES
    md = (out / "train_profile.md").read_text()
    assert "## Per stage" in md and "| teacher_forward |" in md


def test_profile_only_options_need_profile(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["bench", "train", "--presets", "boxseg", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--presets is an option of --profile" in r.output
    r = CliRunner().invoke(main, ["bench", "train", "--profile", "--presets", "boxsegg", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "boxseg" in r.output
