"""`boxseg bench readme`: the README's results block is rendered from bench JSON, and the shipped README matches
the reports kept in docs/results/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from boxseg.bench.readme import BEGIN, END, ReadmeError, cli, load_reports, render, replace_block
from boxseg.bench.report import write_report
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
MACHINE = {"cpu": "Test CPU", "cores_usable": 3, "ram_gib": 7.5, "gpu": None,
           "versions": {"torch": "9.9", "onnxruntime": "1.0", "numpy": "2"}}


def write_reports(folder: Path) -> None:
    write_report("latency", [
        {"backend": "ort", "device": "cpu", "size": 320, "batch": 1, "status": "ok", "p50_ms": 12.5, "p90_ms": 14.0,
         "img_s": 80.0, "pre_ms": 0.1, "infer_ms": 12.0, "post_ms": 0.4, "peak_mb": 3.0},
        {"backend": "tensorrt", "device": "cuda", "size": 320, "batch": 1, "status": "skipped: no GPU"},
    ], folder, {"model": "m.onnx", "threads": 2}, machine=MACHINE)
    write_report("ablation", [
        {"preset": "boxinst", "kind": "trained", "runs": 3, "AP": "40.1 ± 0.5", "AP_mean": 40.1, "box_AP": "60.0 ± 1.0"},
        {"preset": "boxseg", "kind": "trained", "runs": 3, "AP": "42.3 ± 0.7", "AP_mean": 42.3, "box_AP": "61.0 ± 1.0"},
    ], folder, {"presets": ["boxinst", "boxseg"], "seeds": 3, "iters": 300, "split": "hard"}, machine=MACHINE)


def test_render_orders_sections_names_the_machine_and_picks_columns(tmp_path: Path) -> None:
    write_reports(tmp_path)
    text = render(load_reports([tmp_path]), source="R")
    assert text.count("Measured on: Test CPU, 3 usable cores, 7.5 GiB RAM, no GPU; torch 9.9, onnxruntime 1.0") == 1
    assert "numpy" not in text  # only the libraries that decide speed
    # ablation before latency, whatever the file order; captions from meta
    assert text.index("Mask AP per preset") < text.index("Latency per backend")
    assert "From `R/ablation.json`: presets `boxinst,boxseg`; seeds `3`; iters `300`; split `hard`." in text
    assert "| boxseg | 3 | 42.3 ± 0.7 | 61.0 ± 1.0 |" in text
    # chosen columns with readable headers; the helper column AP_mean and peak_mb are not shown
    assert "| backend | device | size | batch | status | p50 | p90 | images/s | pre | infer | post |" in text
    assert "AP_mean" not in text and "peak_mb" not in text
    assert "| tensorrt | cuda | 320 | 1 | skipped: no GPU |" in text
    # write_report leaves a chart beside each JSON: linked under its table, from the same source folder
    assert "![ablation](R/ablation.png)" in text and "![latency](R/latency.png)" in text


def test_telemetry_shows_one_row_per_preset_with_its_curves(tmp_path: Path) -> None:
    rows = [{"preset": p, "iteration": it, "pseudo_valid_frac": v, "pseudo_iou": None if it == 100 else 0.7,
             "bank_size": 80.0} for p, v0 in (("sim", 0.9), ("boxseg", 0.0)) for it, v in ((200, v0 + 0.05),
                                                                                            (100, v0))]
    write_report("ablation_telemetry", rows, tmp_path, {"presets": ["sim", "boxseg"]}, machine=MACHINE)
    text = render(load_reports([tmp_path]))
    assert "| preset | at iterations | valid pseudo masks | pseudo IoU | bank |" in text  # keys never logged: no column
    assert "| sim | 100 200 | 0.90 0.95 | - 0.70 | 80 80 |" in text  # in iteration order, whatever the row order
    assert "| boxseg | 100 200 | 0.00 0.05 | - 0.70 | 80 80 |" in text


def test_machines_that_differ_are_named_per_section(tmp_path: Path) -> None:
    write_reports(tmp_path)
    doc = json.loads((tmp_path / "latency.json").read_text())
    doc["machine"] = {**MACHINE, "gpu": "NVIDIA H100", "gpu_driver": "570", "cuda": "12.8"}
    (tmp_path / "latency.json").write_text(json.dumps(doc))
    text = render(load_reports([tmp_path]))
    assert text.count("Measured on:") == 2 and "NVIDIA H100 (driver 570, CUDA 12.8)" in text


def test_replace_block_and_the_cli_check(tmp_path: Path) -> None:
    write_reports(tmp_path / "r")
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nintro\n\n{BEGIN}\nold\n{END}\n\ntail\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["--from", str(tmp_path / "r"), "--readme", str(readme), "--check"])
    assert res.exit_code == 1 and "out of date" in res.output
    res = runner.invoke(cli, ["--from", str(tmp_path / "r"), "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    text = readme.read_text()
    assert text.startswith("# T\n\nintro\n\n" + BEGIN) and text.endswith(END + "\n\ntail\n") and "old" not in text
    assert "Mask AP per preset" in text
    res = runner.invoke(cli, ["--from", str(tmp_path / "r"), "--readme", str(readme), "--check"])
    assert res.exit_code == 0 and "up to date" in res.output
    assert replace_block(text, render(load_reports([tmp_path / "r"]), source=str(tmp_path / "r")), "x") == text


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"rows": 3}')
    with pytest.raises(ReadmeError, match=r"x\.json: not a bench report"):
        load_reports([tmp_path])
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ReadmeError, match=r"x\.json: cannot read"):
        load_reports([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadmeError, match="no bench reports"):
        load_reports([tmp_path / "empty"])
    with pytest.raises(ReadmeError, match="no generated-results block"):
        replace_block("# nothing here\n", "b", "README.md")


def test_the_shipped_readme_matches_docs_results() -> None:
    """The README's numbers are the ones in docs/results/*.json (regenerate with `boxseg bench readme --readme
    README.md` from the repository root after copying new reports there)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = render(load_reports([REPO / "docs" / "results"]), source="docs/results")
    assert replace_block(text, block, "README.md") == text
