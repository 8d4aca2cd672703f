"""The demo's orchestration: schedule scaling, stage statuses (ok / not built / skipped / failed / not run),
exit codes and the summary, with small stage functions instead of the real (slow) stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boxseg import demo
from boxseg.demo import DemoSettings, NotBuilt, Stage, run_demo


def test_import_or_not_built_tells_missing_from_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotBuilt, match="boxseg.no_such_part"):
        demo.import_or_not_built("boxseg.no_such_part")
    # A module that exists but fails to import is a broken stage, not a missing one.
    (tmp_path / "boxseg_demo_broken_mod.py").write_text("import boxseg_demo_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        demo.import_or_not_built("boxseg_demo_broken_mod")


def _stages(calls: list[str], fail: str | None = None) -> tuple[Stage, ...]:
    def make(name: str):
        def run(ctx):
            calls.append(name)
            if name == fail:
                raise RuntimeError(f"{name} broke")
            ctx.artefacts[name] = str(ctx.out / name)
            return {"value": len(calls)}
        return run

    return (
        Stage("a", "first", ("json",), (), make("a")),
        Stage("b", "missing module", ("boxseg.no_such_part",), ("a",), make("b")),
        Stage("c", "needs b", ("json",), ("a", "b"), make("c")),
        Stage("d", "optional b", ("json",), ("a", "b"), make("d"), optional=("b",)),
        Stage("e", "last", ("json",), ("a",), make("e")),
    )


def test_runner_statuses_and_summary(tmp_path: Path) -> None:
    calls: list[str] = []
    lines: list[str] = []
    summary = run_demo(DemoSettings(out_dir=tmp_path, quick=True), log=lines.append, stages=_stages(calls))
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status == {"a": "ok", "b": "not built", "c": "skipped", "d": "ok", "e": "ok"}
    assert calls == ["a", "d", "e"]  # b's function never ran: its module is missing
    assert summary["ok"] and summary["failed_stage"] is None
    assert "boxseg.no_such_part" in next(s["detail"] for s in summary["stages"] if s["name"] == "b")
    assert summary["artefacts"]["a"] == str(tmp_path / "a")
    assert json.loads((tmp_path / "summary.json").read_text())["stages"] == summary["stages"]
    assert any(line.startswith("[1/5] a: ok in") for line in lines)  # a progress line per stage


def test_runner_stops_at_a_failing_stage(tmp_path: Path) -> None:
    calls: list[str] = []
    summary = run_demo(DemoSettings(out_dir=tmp_path), log=lambda m: None, stages=_stages(calls, fail="d"))
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status["d"] == "failed" and status["e"] == "not run"
    assert not summary["ok"] and summary["failed_stage"] == "d"
    assert "RuntimeError: d broke" in (tmp_path / "logs" / "d.err").read_text()


def test_cli_exit_status_names_the_failed_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from boxseg.cli import main

    calls: list[str] = []
    monkeypatch.setattr(demo, "STAGES", _stages(calls, fail="a"))
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 1
    assert "stage 'a' failed" in r.stderr
    out = json.loads(r.stdout)
    assert out["failed_stage"] == "a" and [s["status"] for s in out["stages"]][:2] == ["failed", "not run"]


def test_cli_rejects_a_stray_argument(tmp_path: Path) -> None:
    from boxseg.cli import main

    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "oops"])
    assert r.exit_code == 2 and "key=value" in r.output
