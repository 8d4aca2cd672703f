"""`boxseg bench compare`: matching, ratios, direction-aware flags, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from boxseg.bench.compare import cli, compare_reports, infer_keys, metric_direction
from click.testing import CliRunner


def report(rows: list[dict], keys: list[str] | None = None) -> dict:
    return {"name": "t", "meta": {"keys": keys} if keys else {}, "machine": {}, "rows": rows}


A = report([
    {"backend": "ort", "size": 640, "batch": 1, "status": "ok", "p50_ms": 10.0, "img_s": 100.0, "peak_mb": 50.0,
     "std_ms": 1.0},
    {"backend": "runtime", "size": 640, "batch": 1, "status": "ok", "p50_ms": 8.0, "img_s": 125.0, "peak_mb": 40.0,
     "std_ms": 1.0},
    {"backend": "torch", "size": 640, "batch": 1, "status": "ok", "p50_ms": 30.0, "img_s": 33.0},
])
B = report([
    {"backend": "ort", "size": 640, "batch": 1, "status": "ok", "p50_ms": 12.0, "img_s": 83.0, "peak_mb": 50.0,
     "std_ms": 3.0},
    {"backend": "runtime", "size": 640, "batch": 1, "status": "ok", "p50_ms": 6.0, "img_s": 166.0, "peak_mb": 60.0,
     "std_ms": 1.0},
    {"backend": "tensorrt", "size": 640, "batch": 1, "status": "ok", "p50_ms": 1.0},
])


@pytest.mark.parametrize(
    ("name", "direction"),
    [("p50_ms", "lower"), ("infer_ms", "lower"), ("peak_mb", "lower"), ("step_s", "lower"), ("loss", "lower"),
     ("runtime_post_share", "lower"), ("img_s", "higher"), ("img/s", "higher"), ("images_per_s", "higher"),
     ("it_s", "higher"), ("fps", "higher"), ("AP", "higher"), ("segm_AP50", "higher"), ("APs", "higher"),
     ("speedup", "higher"), ("std_ms", None), ("outliers", None), ("dets", None), ("n", None), ("size", None)],
)
def test_metric_direction(name: str, direction: str | None) -> None:
    assert metric_direction(name) == direction


def test_ratios_and_flags() -> None:
    res = compare_reports(A, B, threshold=0.10)
    assert res["keys"] == ["backend", "size", "batch"]  # inferred: text columns + setting-named ints
    got = {(r["backend"], r["metric"]): r for r in res["rows"]}
    assert got[("ort", "p50_ms")]["ratio"] == pytest.approx(1.2)
    assert got[("ort", "p50_ms")]["flag"] == "regression"  # latency up 20%
    assert got[("ort", "img_s")]["ratio"] == pytest.approx(0.83)
    assert got[("ort", "img_s")]["flag"] == "regression"  # throughput down 17%
    assert got[("ort", "peak_mb")]["flag"] == ""  # unchanged
    assert got[("ort", "std_ms")]["ratio"] == pytest.approx(3.0) and got[("ort", "std_ms")]["flag"] == ""
    assert got[("runtime", "p50_ms")]["flag"] == "improved"
    assert got[("runtime", "img_s")]["flag"] == "improved"
    assert got[("runtime", "peak_mb")]["flag"] == "regression"  # memory up 50%
    assert res["regressions"] == 3 and res["improvements"] == 2
    assert res["only_in_a"] == [{"backend": "torch", "size": 640, "batch": 1}]
    assert res["only_in_b"] == [{"backend": "tensorrt", "size": 640, "batch": 1}]
    # a looser threshold lets the 17-20% changes pass, not the 50% one
    assert compare_reports(A, B, threshold=0.25)["regressions"] == 1


def test_keys_from_meta_and_duplicates() -> None:
    a = report([{"preset": "boxseg", "seed": 0, "AP": 30.0}, {"preset": "boxseg", "seed": 1, "AP": 32.0}])
    b = report([{"preset": "boxseg", "seed": 0, "AP": 25.0}, {"preset": "boxseg", "seed": 1, "AP": 32.5}])
    assert infer_keys(a["rows"]) == ["preset", "seed"]
    res = compare_reports(a, b)
    assert [r["flag"] for r in res["rows"]] == ["regression", ""]
    # keys that do not tell rows apart are an error naming the fix
    with pytest.raises(Exception, match="--keys"):
        compare_reports(a, b, keys=["preset"])
    # explicit meta keys win over inference
    a2, b2 = dict(a, meta={"keys": ["seed"]}), dict(b, meta={"keys": ["seed"]})
    assert compare_reports(a2, b2)["keys"] == ["seed"]


def test_zero_baseline_gives_no_ratio() -> None:
    res = compare_reports(report([{"k": "x", "post_ms": 0.0}]), report([{"k": "x", "post_ms": 1.0}]))
    assert res["rows"][0]["ratio"] is None and res["rows"][0]["flag"] == ""


def test_cli_json_and_exit_status(tmp_path: Path) -> None:
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(A))
    pb.write_text(json.dumps(B))
    runner = CliRunner()
    res = runner.invoke(cli, [str(pa), str(pb), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["regressions"] == 3
    res = runner.invoke(cli, [str(pa), str(pb), "--fail-on-regression"])
    assert res.exit_code == 1
    assert "3 regressions" in res.stdout and "| ort |" in res.stdout
    res = runner.invoke(cli, [str(pa), str(pa), "--fail-on-regression"])
    assert res.exit_code == 0 and "0 regressions" in res.stdout
    pb.write_text("{not json")
    res = runner.invoke(cli, [str(pa), str(pb)])
    assert res.exit_code != 0 and "b.json: not valid JSON" in res.output
