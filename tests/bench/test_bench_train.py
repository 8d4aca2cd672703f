"""`boxseg bench train`: both ops modes in their own processes on a tiny model, report files, ratios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boxseg.cli import main

# ModelConfig.tiny() as overrides: a 0.9M-parameter model, so a step takes milliseconds.
TINY_MODEL = ["model.backbone=resnet18", "model.pretrained=false", "model.resnet_width=16", "model.freeze_stem=false",
              "model.fpn_channels=32", "model.head_convs=1", "model.mask_branch_width=32", "model.mask_branch_convs=1",
              "model.mask_branch_norm=GN", "model.pre_nms_topk=200", "model.max_dets=20"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_train")
    r = CliRunner().invoke(main, ["bench", "train", "--preset", "boxinst", "--batch", "2", "--imgsz", "64",
                                  "--iters", "3", "--warmup", "1", "--ops", "fused,reference", "--threads", "1",
                                  "--out", str(out), "--json", *TINY_MODEL], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out


def test_rows_per_ops_mode(report: tuple[dict, Path]) -> None:
    doc, _ = report
    rows = {row["ops"]: row for row in doc["rows"]}
    assert set(rows) == {"fused", "reference"}
    for row in rows.values():
        assert row["status"] == "ok"
        assert row["batch"] == 2 and row["imgsz"] == 64 and row["threads"] == 1
        assert 0 < row["step_ms_min"] <= row["step_ms_p50"]
        assert row["it_s"] == pytest.approx(1000.0 / row["step_ms_p50"])
        assert row["img_s"] == pytest.approx(2 * row["it_s"])
        assert row["peak_mb"] >= 0 and row["rss_peak_mb"] > 50  # torch alone is well over 50 MB resident


def test_modes_train_the_same_model(report: tuple[dict, Path]) -> None:
    """Same seed, same batches: the first step's loss differs only by the kernels' rounding."""
    doc, _ = report
    rows = {row["ops"]: row for row in doc["rows"]}
    f, r = rows["fused"]["first_loss"], rows["reference"]["first_loss"]
    assert f == pytest.approx(r, rel=1e-4, abs=1e-5)
    summary = doc["summary"]
    assert summary["first_loss_abs_diff"] == pytest.approx(abs(f - r))
    assert summary["first_steps_max_term_diff"] is not None and summary["first_steps_max_term_diff"] < 1e-3
    assert summary["reference_over_fused_step"] == pytest.approx(
        rows["reference"]["step_ms_p50"] / rows["fused"]["step_ms_p50"])


def test_report_files_and_meta(report: tuple[dict, Path]) -> None:
    doc, out = report
    for suffix in ("json", "csv", "md", "png"):
        assert (out / f"train.{suffix}").stat().st_size > 0
    assert doc["meta"]["keys"] == ["preset", "ops", "device", "batch", "imgsz"]
    assert doc["meta"]["overrides"][0] == "model.backbone=resnet18"
    assert "| fused |" in (out / "train.md").read_text()


def test_bad_ops_and_bad_override_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["bench", "train", "--ops", "fast", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "fused, reference" in r.output
    r = CliRunner().invoke(main, ["bench", "train", "--out", str(tmp_path), "model.no_such_key=1"])
    assert r.exit_code == 2 and "no_such_key" in r.output
