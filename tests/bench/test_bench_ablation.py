"""`boxseg bench ablation` on a tiny bench split with a tiny model: aggregation, reports, resumability."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from boxseg.bench.ablation import aggregate, mean_std
from click.testing import CliRunner

from boxseg.cli import main

TINY = ["model.backbone=resnet18", "model.pretrained=false", "model.resnet_width=16", "model.freeze_stem=false",
        "model.fpn_channels=32", "model.head_convs=1", "model.mask_branch_width=32", "model.mask_branch_convs=1",
        "model.mask_branch_norm=GN", "model.pre_nms_topk=200", "model.max_dets=20",
        "input.train_scales=[64]", "input.train_max_size=128", "input.test_size=64", "input.test_max_size=128",
        "solver.ims_per_batch=2", "runtime.progress=false", "runtime.threads=1"]


def _invoke(data: Path, out: Path, iters: int = 2):
    return CliRunner().invoke(main, ["bench", "ablation", "--presets", "boxinst", "--seeds", "2", "--iters",
                                     str(iters), "--data", str(data), "--out", str(out), "--json", *TINY],
                              catch_exceptions=False)


def _ablation(data: Path, out: Path) -> dict:
    r = _invoke(data, out)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    from boxseg.data.synth import generate_bench

    data = tmp_path_factory.mktemp("bench_split")
    generate_bench(data, size=(64, 64), num_train=6, num_val=3, progress=False)
    out = tmp_path_factory.mktemp("ablation")
    return _ablation(data, out), data, out


def test_mean_and_std_over_seeds(run: tuple[dict, Path, Path]) -> None:
    doc, _, out = run
    results = [json.loads((out / "runs" / "boxinst" / f"seed{k}" / "result.json").read_text()) for k in (0, 1)]
    assert [r["seed"] for r in results] == [0, 1] and all(r["iterations"] == 2 for r in results)
    row = next(r for r in doc["rows"] if r["preset"] == "boxinst")
    assert row["runs"] == 2
    aps = [r["segm"]["AP"] for r in results]
    assert row["AP_mean"] == pytest.approx(statistics.fmean(aps))
    assert row["AP_std"] == pytest.approx(statistics.stdev(aps))
    assert row["AP"] == f"{statistics.fmean(aps):.1f} ± {statistics.stdev(aps):.1f}"
    assert len(doc["summary"]["runs"]) == 2
    assert doc["meta"]["split"] == "easy"  # --data given: the split is read from the data's annotations


def test_baselines_are_listed(run: tuple[dict, Path, Path]) -> None:
    doc, data, _ = run
    from boxseg.eval.baselines import baseline_results
    from boxseg.eval.coco_eval import evaluate

    gt = data / "val" / "annotations.json"
    row = next(r for r in doc["rows"] if r["preset"] == "ellipse baseline")
    assert row["kind"] == "baseline" and row["AP_std"] == 0.0
    assert row["AP_mean"] == pytest.approx(evaluate(gt, baseline_results(gt, "ellipse"))["segm"]["AP"])


def test_report_files(run: tuple[dict, Path, Path]) -> None:
    _, _, out = run
    for name in ("ablation", "ablation_runs"):
        for suffix in ("json", "csv", "md", "png"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0
    md = (out / "ablation.md").read_text()
    assert "| boxinst | 2 |" in md and "±" in md


def test_resume_reads_saved_results(run: tuple[dict, Path, Path], tmp_path: Path) -> None:
    """A second invocation trains nothing: it aggregates the result files that exist (edited here to prove it).
    It edits a copy, so the module's other tests see the real results whatever order they run in."""
    import shutil

    _, data, shared = run
    out = tmp_path / "out"
    shutil.copytree(shared, out)
    for k, ap in ((0, 10.0), (1, 20.0)):
        path = out / "runs" / "boxinst" / f"seed{k}" / "result.json"
        result = json.loads(path.read_text())
        result["segm"]["AP"] = ap
        path.write_text(json.dumps(result))
    doc = _ablation(data, out)
    row = next(r for r in doc["rows"] if r["preset"] == "boxinst")
    assert row["AP_mean"] == pytest.approx(15.0) and row["AP_std"] == pytest.approx(statistics.stdev([10, 20]))


def test_a_result_of_another_configuration_is_not_reused(run: tuple[dict, Path, Path]) -> None:
    _, data, out = run
    r = _invoke(data, out, iters=3)
    assert r.exit_code == 2 and "another configuration" in r.output


def test_aggregate_handles_missing_size_ranges() -> None:
    results = [{"segm": {"AP": 30.0, "APl": None}, "bbox": {"AP": 50.0}},
               {"segm": {"AP": 34.0, "APl": None}, "bbox": {"AP": 52.0}}]
    row = aggregate("x", results)
    assert row["AP_mean"] == 32.0 and row["AP"] == "32.0 ± 2.8"
    assert row["APl"] == "-" and row["APl_mean"] is None
    assert mean_std([5.0]) == (5.0, 0.0)


def test_unknown_preset_exits_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["bench", "ablation", "--presets", "boxins", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "boxinst" in r.output  # the close-match suggestion


def test_runs_record_their_evaluation_curve_and_convergence(run: tuple[dict, Path, Path]) -> None:
    doc, _, out = run
    result = json.loads((out / "runs" / "boxinst" / "seed0" / "result.json").read_text())
    # --iters 2: evaluation every max(1, 2 // 4) = 1 iteration.
    assert [e["iteration"] for e in result["evals"]] == [1, 2]
    aps = [e["AP"] for e in result["evals"]]
    assert result["converged"] == (abs(aps[-1] - aps[-2]) < 1.0)
    row = next(r for r in doc["rows"] if r["preset"] == "boxinst")
    assert row["diff"] == "(reference)" and row["converged"].endswith("/2")
    assert doc["meta"]["protocol"]["max_iter"] == 2


def test_paired_difference_with_its_t_interval() -> None:
    from boxseg.bench.ablation import format_difference, paired_difference

    d = paired_difference({0: 12.0, 1: 13.0, 2: 11.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    # Differences 2, 3, 1: mean 2, sample std 1, t(0.975, 2 df) = 4.303 -> half width 4.303 / sqrt(3).
    half = 4.303 / 3 ** 0.5
    assert d["n"] == 3 and d["mean"] == pytest.approx(2.0)
    assert (d["lo"], d["hi"]) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert format_difference(d) == f"+2.0 [{2.0 - half:+.1f}, {2.0 + half:+.1f}]"
    one = paired_difference({0: 5.0, 3: 1.0}, {0: 4.0})  # only seed 0 is paired
    assert (one["n"], one["mean"], one["lo"]) == (1, 1.0, None) and format_difference(one) == "+1.0"


def test_variant_rows_are_paired_with_their_base_preset() -> None:
    from boxseg.bench.ablation import add_paired_differences, add_variant_differences

    def runs(*aps: float) -> list[dict]:
        return [{"seed": s, "segm": {"AP": ap}} for s, ap in enumerate(aps)]

    per_preset = {"boxinst": runs(30.0, 31.0), "boxseg": runs(32.0, 32.0), "boxseg[qam.gate=soft]": runs(33.0, 34.0),
                  "sim[sim.tau=0.1]": runs(29.0, 29.0)}
    rows = [{"preset": p, "kind": "trained"} for p in per_preset] + [{"preset": "ellipse baseline",
                                                                      "kind": "baseline"}]
    add_paired_differences(rows, per_preset)
    add_variant_differences(rows, per_preset)
    by = {r["preset"]: r for r in rows}
    assert by["boxseg[qam.gate=soft]"]["diff_base_mean"] == pytest.approx(1.5)  # (33-32 + 34-32) / 2
    assert by["boxseg[qam.gate=soft]"]["diff_mean"] == pytest.approx(3.0)  # still paired with boxinst too
    assert "diff_base" not in by["boxseg"] and "diff_base" not in by["sim[sim.tau=0.1]"]  # no base run: no pair
    assert "diff_base" not in by["ellipse baseline"]


def test_label_then_train_row(tmp_path: Path) -> None:
    """label+condinst: the boxseg run of the same seed labels the train split, then condinst trains on the labels;
    the row reads that run and the labels keep every training annotation."""
    from boxseg.data.synth import generate_bench

    data = tmp_path / "split"
    generate_bench(data, size=(64, 64), num_train=4, num_val=2, progress=False)
    out = tmp_path / "out"
    tiny = [*TINY, "teacher.input.short=64", "teacher.input.max=128"]
    r = CliRunner().invoke(main, ["bench", "ablation", "--presets", "label+condinst", "--seeds", "1", "--iters", "1",
                                  "--data", str(data), "--out", str(out), "--json", *tiny], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [row["preset"] for row in doc["rows"] if row["kind"] == "trained"] == ["label+condinst"]
    assert (out / "runs" / "boxseg" / "seed0" / "result.json").is_file()
    result = json.loads((out / "runs" / "label+condinst" / "seed0" / "result.json").read_text())
    assert result["preset"] == "label+condinst"
    labels = json.loads((out / "labels" / "boxseg" / "seed0" / "annotations.json").read_text())
    source = json.loads((data / "train" / "annotations.json").read_text())
    assert [a["id"] for a in labels["annotations"]] == [a["id"] for a in source["annotations"]]
    assert all("boxseg_valid" in a for a in labels["annotations"])


@pytest.mark.parametrize("preset, iters, overrides, fingerprint", [
    ("boxseg", 40, ["solver.lr=0.02"], "bcec0a238331aa34"),
    ("boxinst", None, [], "3621b8e7535063bd"),
    ("boxteacher", None, [], "ab9a04d5df69a376"),
])
def test_run_fingerprints_are_stable(preset: str, iters: int | None, overrides: list[str], fingerprint: str) -> None:
    """A saved run is reused only when its config fingerprint matches: a config refactor that moves any resolved
    value (or turns an int into a float) changes it and makes every existing ablation folder unusable."""
    from boxseg.bench.ablation import config_fingerprint, run_config

    cfg = run_config(preset, "synthetic_cpu", 1, Path("/d"), Path("/r"), iters, "cpu", 2, overrides)
    assert config_fingerprint(cfg) == fingerprint


def test_variant_rows_train_a_preset_with_their_own_overrides(tmp_path: Path) -> None:
    """'boxinst[solver.lr=0.02]' is boxinst with that key changed, in its own row and folder; a bad key in a variant
    fails before any training."""
    from boxseg.bench.ablation import parse_presets, run_folder, split_variant

    assert parse_presets("boxinst,boxseg[qam.gate=soft;qam.soft_gate_power=2],sim") == [
        "boxinst", "boxseg[qam.gate=soft;qam.soft_gate_power=2]", "sim"]
    assert split_variant("boxseg[qam.gate=soft; loss.mask_sup.weight_exponent=4]") == (
        "boxseg", ["qam.gate=soft", "loss.mask_sup.weight_exponent=4"])
    assert split_variant("boxinst") == ("boxinst", [])
    assert run_folder("boxseg[qam.gate=soft;qam.soft_gate_power=2]") == "boxseg+qam.gate_soft+qam.soft_gate_power_2"
    from boxseg.data.synth import generate_bench

    data = tmp_path / "split"
    generate_bench(data, size=(64, 64), num_train=4, num_val=2, progress=False)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", "ablation", "--presets", "boxinst[solver.lr=0.02]", "--seeds", "1",
                                  "--iters", "1", "--data", str(data), "--out", str(out), "--json", *TINY],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [row["preset"] for row in doc["rows"] if row["kind"] == "trained"] == ["boxinst[solver.lr=0.02]"]
    run_dir = out / "runs" / "boxinst+solver.lr_0.02" / "seed0"
    assert json.loads((run_dir / "result.json").read_text())["preset"] == "boxinst[solver.lr=0.02]"
    assert "lr: 0.02" in (run_dir / "config.yaml").read_text()
    bad = CliRunner().invoke(main, ["bench", "ablation", "--presets", "boxinst[solver.no_such_key=1]", "--seeds",
                                    "1", "--data", str(data), "--out", str(tmp_path / "bad"), *TINY])
    assert bad.exit_code == 2 and "no_such_key" in bad.output and not (tmp_path / "bad" / "runs").exists()
