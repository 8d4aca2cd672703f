"""CLI: help for every command, `data synth` and `eval` end to end on tiny data, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boxseg.cli import COMMANDS, main


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_root_help_lists_every_command() -> None:
    r = _run("--help")
    assert r.exit_code == 0
    assert all(name in r.output for name in COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    r = _run(name, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output


def test_unknown_command_and_bad_options_exit_2(tmp_path: Path) -> None:
    assert _run("no-such-command").exit_code == 2
    assert _run("data", "synth", "--out", str(tmp_path), "--split", "medium").exit_code == 2
    assert _run("data", "synth", "--out", str(tmp_path), "--size", "8", "8").exit_code == 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    r = _run("data", "synth", "--out", str(out), "--num-images", "3", "--size", "64", "96", "--seed", "1",
             "--json")
    assert r.exit_code == 0
    summary = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert summary["images"] == 3 and summary["size"] == [64, 96] and summary["instances"] > 0
    return out


def test_synth_human_summary(tmp_path: Path) -> None:
    r = _run("data", "synth", "--out", str(tmp_path), "--num-images", "2", "--size", "64", "64", "--split", "hard")
    assert r.exit_code == 0 and "wrote 2 hard images (64x64)" in r.stdout
    assert len(list((tmp_path / "images").glob("*.png"))) == 2


def test_synth_bench_preset(tmp_path: Path) -> None:
    r = _run("data", "synth", "--out", str(tmp_path), "--preset", "bench", "--num-images", "4", "--size", "64",
             "64", "--json")
    assert r.exit_code == 0
    s = json.loads(r.stdout)
    assert s["preset"] == "bench" and s["subsets"]["train"]["images"] == 4 and s["subsets"]["val"]["images"] == 1
    assert (tmp_path / "train" / "annotations.json").is_file() and (tmp_path / "val" / "annotations.json").is_file()
    # A bench root given to eval means its val/ split.
    e = json.loads(_run("eval", "--data", str(tmp_path), "--baseline", "box-fill", "--json").stdout)
    assert e["data"] == str(tmp_path / "val")


def test_eval_baseline_json_and_table(tiny: Path) -> None:
    r = _run("eval", "--data", str(tiny), "--baseline", "ellipse", "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert set(out) == {"data", "predictor", "segm", "bbox", "instances", "report"}
    assert out["predictor"] == "baseline:ellipse"
    assert out["report"]["images"] == 3 and out["instances"] == out["report"]["annotations"] > 0
    assert out["bbox"]["AP"] == pytest.approx(100.0)  # baseline boxes are the GT boxes
    assert 0 < out["segm"]["AP"] < 100
    r = _run("eval", "--data", str(tiny), "--baseline", "box-fill", "--per-category")
    assert r.exit_code == 0
    assert all(m in r.stdout for m in ("AP50", "APs", "segm", "bbox", "per category"))
    assert "instances scored" in r.stdout and "dataset: 3 images" in r.stdout


def test_eval_needs_exactly_one_predictor(tiny: Path) -> None:
    assert _run("eval", "--data", str(tiny)).exit_code == 2
    ckpt = tiny / "annotations.json"  # any existing file: the check comes first
    assert _run("eval", "--data", str(tiny), "--baseline", "ellipse", "--checkpoint", str(ckpt)).exit_code == 2


def test_eval_checkpoint_of_the_wrong_kind_is_a_clear_error(tiny: Path) -> None:
    bogus = tiny / "annotations.json"  # exists, but is no checkpoint
    r = _run("eval", "--data", str(tiny), "--checkpoint", str(bogus))
    assert r.exit_code == 1 and str(bogus) in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_eval_bad_data_exits_1_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "annotations.json").write_text('{"images": [}')
    r = CliRunner().invoke(main, ["eval", "--data", str(tmp_path), "--baseline", "box-fill"])
    assert r.exit_code == 1 and "annotations.json" in r.output and "line 1" in r.output
