"""`boxseg demo --quick` end to end (the CI demo test): every stage runs and leaves its artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boxseg.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("demo")
    # One thread: CI runs two test workers on two cores.
    r = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out), "--threads", "1", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, f"{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout), r.stderr, out


def test_every_stage_succeeds(quick: tuple[dict, str, Path]) -> None:
    summary, _, _ = quick
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert list(status) == ["data", "baselines", "train", "eval", "label", "export", "predict", "bench"]
    assert summary["ok"] and summary["failed_stage"] is None
    assert set(status.values()) == {"ok"}, summary["stages"]


def test_progress_lines_on_stderr(quick: tuple[dict, str, Path]) -> None:
    summary, stderr, _ = quick
    for k, s in enumerate(summary["stages"], 1):
        assert f"[{k}/{len(summary['stages'])}] {s['name']}" in stderr


def test_artefacts_exist(quick: tuple[dict, str, Path]) -> None:
    summary, _, out = quick
    art = summary["artefacts"]
    assert json.loads(Path(art["summary"]).read_text())["stages"] == summary["stages"]
    assert (Path(art["data"]) / "train" / "annotations.json").is_file()
    assert all(Path(p).exists() for p in art.values())
    assert Path(art["checkpoint"]).stat().st_size > 1_000_000  # the Lite0 student, well over 1 MB
    assert Path(art["onnx"]).suffix == ".onnx" and summary["export"]["verified"] is True
    assert len(list(Path(art["overlays"]).glob("*.png"))) == summary["settings"]["plan"]["overlays"]
    assert isinstance(json.loads(Path(art["predictions"]).read_text()), list)
    bench = json.loads((out / "bench" / "latency.json").read_text())
    assert {r["backend"] for r in bench["rows"]} == {"torch", "ort", "runtime"}
    assert all(r["status"] == "ok" for r in bench["rows"]), bench["rows"]


def test_mask_ap_next_to_baselines(quick: tuple[dict, str, Path]) -> None:
    summary, _, _ = quick
    ap = summary["mask_ap"]
    assert ap["box-fill in the GT boxes"]["AP"] > 0 and ap["ellipse in the GT boxes"]["AP"] > 0
    preset = summary["settings"]["preset"]
    assert 0.0 <= ap[f"{preset} (PyTorch)"]["AP"] <= 100.0
    # Same detections, ellipse masks: tells detection quality from mask quality.
    assert 0.0 <= ap[f"ellipse in the {preset} student's boxes"]["AP"] <= 100.0
    # The runtime runs the exported student at the same input size: the same AP up to rounding in pasting.
    torch_ap, rt_ap = ap[f"{preset} (PyTorch)"]["AP"], ap[f"{preset} (runtime, ONNX)"]["AP"]
    assert abs(torch_ap - rt_ap) <= 1.0 + 0.05 * torch_ap


def test_quick_plan_is_small(quick: tuple[dict, str, Path]) -> None:
    plan = quick[0]["settings"]["plan"]
    assert plan["train_images"] <= 32 and plan["iters"] <= 40 and plan["size"] <= 192


def test_label_stage_scores_the_val_labels(quick: tuple[dict, str, Path]) -> None:
    summary, _, _ = quick
    lab = summary["labels"]
    labels = json.loads(Path(summary["artefacts"]["labels"]).read_text())
    assert lab["annotations"] == len(labels["annotations"]) > 0
    assert lab["valid"] == sum(a["boxseg_valid"] for a in labels["annotations"])
    assert lab["miou"] is None or 0.0 <= lab["miou"] <= 1.0
