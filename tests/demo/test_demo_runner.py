"""The demo's orchestration: stage statuses (ok / failed / not run), exit codes and the summary, with small stage
functions instead of the real (slow) stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boxseg import demo
from boxseg.demo import DemoSettings, Stage, run_demo


def _stages(calls: list[str], fail: str | None = None) -> tuple[Stage, ...]:
    def make(name: str):
        def run(ctx):
            calls.append(name)
            if name == fail:
                raise RuntimeError(f"{name} broke")
            ctx.artefacts[name] = str(ctx.out / name)
            previous = ctx.earlier(calls[-2])["value"] if len(calls) > 1 else 0
            return {"value": previous + 1}
        return run

    return tuple(Stage(name, f"stage {name}", make(name)) for name in ("a", "b", "c"))


def test_runner_statuses_and_summary(tmp_path: Path) -> None:
    calls: list[str] = []
    lines: list[str] = []
    summary = run_demo(DemoSettings(out_dir=tmp_path, quick=True), log=lines.append, stages=_stages(calls))
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status == {"a": "ok", "b": "ok", "c": "ok"}
    assert calls == ["a", "b", "c"]
    assert summary["ok"] and summary["failed_stage"] is None
    assert summary["artefacts"]["a"] == str(tmp_path / "a")
    assert json.loads((tmp_path / "summary.json").read_text())["stages"] == summary["stages"]
    assert any(line.startswith("[1/3] a: ok in") for line in lines)  # a progress line per stage


def test_a_stage_that_cannot_import_its_module_fails_the_demo(tmp_path: Path) -> None:
    """No stage is optional: a missing module is a failure (named, with its traceback), not a skipped stage."""
    def broken(ctx):
        import boxseg.no_such_part  # noqa: F401

    stages = (Stage("a", "first", lambda ctx: {}), Stage("b", "broken", broken), Stage("c", "last", lambda ctx: {}))
    summary = run_demo(DemoSettings(out_dir=tmp_path), log=lambda m: None, stages=stages)
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status == {"a": "ok", "b": "failed", "c": "not run"}
    assert not summary["ok"] and summary["failed_stage"] == "b"
    assert "boxseg.no_such_part" in next(s["detail"] for s in summary["stages"] if s["name"] == "b")
    assert "ModuleNotFoundError" in (tmp_path / "logs" / "b.err").read_text()


def test_runner_stops_at_a_failing_stage(tmp_path: Path) -> None:
    calls: list[str] = []
    summary = run_demo(DemoSettings(out_dir=tmp_path), log=lambda m: None, stages=_stages(calls, fail="b"))
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status == {"a": "ok", "b": "failed", "c": "not run"} and calls == ["a", "b"]
    assert not summary["ok"] and summary["failed_stage"] == "b"
    assert "RuntimeError: b broke" in (tmp_path / "logs" / "b.err").read_text()


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


def test_train_config_applies_the_demo_settings_then_the_users_overrides(tmp_path: Path) -> None:
    """The preset + overlay, the demo's data/size/threads as typed values, the schedule scaled to the plan's
    iterations, then the user's key=value overrides (which win, even over the scaled schedule)."""
    from boxseg.train.config import load_config

    settings = DemoSettings(out_dir=tmp_path, quick=True, threads=1, overrides=("solver.steps=[5]",))
    ctx = demo.DemoContext(settings, log=lambda m: None)
    ctx.results["data"] = demo.StageResult("data", "ok", outputs={"train": str(tmp_path / "my data" / "train")})
    cfg = demo.train_config(ctx)
    base = load_config("boxseg", "synthetic_cpu")
    assert cfg.preset == "boxseg" and cfg.model == base.model and cfg.pc == base.pc
    assert cfg.data.train_dir == str(tmp_path / "my data" / "train") and cfg.runtime.out_dir == str(tmp_path / "train")
    assert cfg.input.train_scales == (160, 192, 224) and cfg.input.test_size == cfg.teacher.input.short == 192
    assert cfg.runtime.threads == 1 and cfg.runtime.checkpoint_every == 0 and cfg.solver.ims_per_batch == 4
    assert cfg.solver.max_iter == 20 and cfg.solver.steps == (5,)
    # The warm-ups were scaled with the schedule: 800 -> 20 iterations.
    assert cfg.loss.pairwise_warmup_iters == round(base.loss.pairwise_warmup_iters * 20 / 800)
