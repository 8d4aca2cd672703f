"""`boxseg check`: the step runner, the kernel comparison, and `--device cuda` on a machine without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from boxseg import check as C
from boxseg.cli import main

STEPS = ["environment", "ops", "bench_ops", "train", "export_runtime", "tensorrt"]


def test_run_step_reports_ok_skip_and_failure_without_raising() -> None:
    ok = C.run_step("a", lambda: {"summary": "fine", "value": 3})
    assert (ok.status, ok.detail, ok.data) == ("ok", "fine", {"value": 3}) and ok.seconds >= 0

    def skip() -> None:
        raise C.Skip("no CUDA device: test")

    skipped = C.run_step("b", skip)
    assert (skipped.status, skipped.detail, skipped.data) == ("skipped", "no CUDA device: test", {})

    def fail() -> None:
        raise ValueError("kernel mismatch on op X")

    failed = C.run_step("c", fail)
    assert failed.status == "failed"
    assert failed.detail.splitlines()[-1] == "ValueError: kernel mismatch on op X"
    assert "Traceback" in failed.detail or len(failed.detail.splitlines()) == C.ERROR_LINES


def test_run_step_lets_an_interrupt_through() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.run_step("d", interrupt)


def test_train_plan() -> None:
    assert C.train_plan("cuda", None) == C.TrainPlan(100, 4, 192, 32, True)
    cpu = C.train_plan("cpu", None)
    assert cpu.iters == 20 and not cpu.amp
    assert C.train_plan("cpu", 3).iters == 3


def test_kernels_match_the_reference_on_cpu() -> None:
    rows = C.op_comparisons(["cpu"])
    assert {r["op"] for r in rows} >= {"color_similarity", "pairwise_loss", "pairwise_grad", "fusion_masks",
                                      "fusion_weights", "fusion_valid", "batched_nms", "pairwise_empty",
                                      "batched_nms_empty"}
    assert {r["dtype"] for r in rows if r["op"] == "pairwise_grad"} == {"float64", "float32"}
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad


def test_a_wrong_kernel_fails_the_ops_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from boxseg.ops import library

    real = library.color_similarity
    monkeypatch.setattr(library, "color_similarity", lambda *a: real(*a) + 1e-3)
    result = C.run_step("ops", lambda: C.step_ops("cpu"))
    assert result.status == "failed" and "color_similarity on cpu" in result.detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour of --device cuda")
def test_check_cuda_on_a_cpu_machine_skips_every_cuda_step(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["check", "--device", "cuda", "--json", "--out", str(tmp_path)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["device"] == "cuda" and doc["ok"] is True
    assert doc["counts"] == {"ok": 1, "failed": 0, "skipped": 5}
    assert [s["name"] for s in doc["steps"]] == STEPS
    for step in doc["steps"]:
        assert set(step) == {"name", "status", "seconds", "detail", "data"}
        if step["name"] == "environment":
            assert step["status"] == "ok" and step["data"]["torch"] == torch.__version__
        else:
            assert step["status"] == "skipped" and step["detail"].startswith("no CUDA device")
    assert "machine" in doc
    assert json.loads((tmp_path / "check.json").read_text())["steps"] == doc["steps"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour of --device cuda")
def test_a_failed_step_makes_the_exit_status_1_and_the_rest_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: str) -> dict:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(C, "step_environment", broken)
    r = CliRunner().invoke(main, ["check", "--device", "cuda"], catch_exceptions=False)
    assert r.exit_code == 1
    assert "environment     failed" in r.stdout and "RuntimeError: simulated failure" in r.stdout
    assert "tensorrt        skipped" in r.stdout and "FAILED (0 ok, 1 failed, 5 skipped)" in r.stdout


def test_bad_device_is_a_usage_error() -> None:
    r = CliRunner().invoke(main, ["check", "--device", "tpu"])
    assert r.exit_code == 2 and "tpu" in r.output
