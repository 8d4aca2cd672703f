"""`boxseg bench latency` on a tiny contract-obeying model through each backend available here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from boxseg.bench.backends import OrtBackend, RuntimeBackend, TorchBackend
from boxseg.bench.latency import cli, measure_one, parse_backends, summarize_targets, synthetic_images
from click.testing import CliRunner
from tiny_models import MAX_DETS, N_VALID, TinyTorchModel

METRICS = ("p50_ms", "p90_ms", "p99_ms", "img_s", "pre_ms", "infer_ms", "post_ms", "peak_mb")


def check_row(row: dict, batch: int) -> None:
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["img_s"] == pytest.approx(batch * 1000.0 / row["p50_ms"])
    for stage in ("pre_ms", "infer_ms", "post_ms"):
        assert row[stage] is not None and row[stage] >= 0.0
    # Stages run inside their iteration's end-to-end interval, and a median of non-negative samples is at most
    # twice their mean: so this holds whatever the timings are (no margin for a machine's noise).
    assert row["pre_ms"] + row["infer_ms"] + row["post_ms"] <= 2.0 * row["mean_ms"] + 1e-3
    assert row["peak_mb"] >= 0.0


def test_ort_backend_through_the_harness(tiny_onnx: Path) -> None:
    backend = OrtBackend(tiny_onnx, threads=1)
    assert backend.available() == (True, "")
    row = measure_one(backend, size=96, batch=2, iters=4, warmup=1)
    check_row(row, batch=2)
    assert row["dets"] == N_VALID
    boxes, masks = backend.last_results[0]
    assert boxes.shape == (N_VALID, 4) and masks.shape == (N_VALID, 72, 96)
    assert masks.dtype == bool and masks.any()
    backend.close()


def test_torch_backend_matches_ort(tiny_onnx: Path) -> None:
    images = synthetic_images(96, 2, seed=3)
    ort_b, torch_b = OrtBackend(tiny_onnx, threads=1), TorchBackend(model=TinyTorchModel(), threads=1)
    for b in (ort_b, torch_b):
        assert b.available() == (True, "")
        b.prepare(96, 2)
        stages = b.run(images)
        assert stages["dets"] == 2 * N_VALID
    for (bo, mo), (bt, mt) in zip(ort_b.last_results, torch_b.last_results):
        np.testing.assert_allclose(bo, bt, rtol=1e-6)
        # same model, same sampling: identical masks up to threshold ties. The last valid box has zero width:
        # no pixels on either side (boxseg.model.postprocess once pasted one column there).
        assert (mo != mt).sum() <= 2
        assert not mo[N_VALID - 1].any() and not mt[N_VALID - 1].any()
    row = measure_one(torch_b, size=96, batch=1, iters=3, warmup=1)
    check_row(row, batch=1)
    torch_b.close()


@pytest.mark.slow  # the first CondInst call may JIT-build the custom ops (minutes, cold)
def test_condinst_checkpoint_backend(tmp_path: Path) -> None:
    from boxseg.train.checkpoint import make_checkpoint, save_checkpoint

    from boxseg.config import config_to_dict
    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    cfg = ModelConfig.tiny()
    model = CondInst(cfg)
    path = save_checkpoint(make_checkpoint(model=model, iteration=0, config={"model": config_to_dict(cfg)},
                                           class_names=["a", "b", "c"]), tmp_path / "tiny.pt")
    backend = TorchBackend(path, threads=1)
    ok, reason = backend.available()
    assert ok, reason
    # 256 px: at 128 px the coarsest FPN level is 1x1 and the head's GroupNorm (one channel per group) refuses it
    check_row(measure_one(backend, size=256, batch=1, iters=2, warmup=1), batch=1)


def test_runtime_backend_matches_ort(tiny_onnx: Path) -> None:
    backend = RuntimeBackend(tiny_onnx, threads=1)
    ok, reason = backend.available()
    if not ok:
        pytest.skip(f"runtime backend unavailable here: {reason}")
    row = measure_one(backend, size=96, batch=2, iters=3, warmup=1)
    check_row(row, batch=2)  # the predictor reports its own pre/infer/post
    assert row["dets"] == N_VALID
    ort_b = OrtBackend(tiny_onnx, threads=1)
    assert ort_b.available() == (True, "")
    ort_b.prepare(96, 2)
    ort_b.run(synthetic_images(96, 2))
    for (bo, mo), (br, mr) in zip(ort_b.last_results, backend.last_results):
        np.testing.assert_allclose(br, bo, rtol=1e-5, atol=1e-3)
        assert mr.shape == mo.shape == (N_VALID, 72, 96) and mr.dtype == bool
        assert (mr != mo).sum() <= 2  # same graph, same paste convention


def test_cli_json_and_files(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "lat"
    res = CliRunner().invoke(cli, ["--model", str(tiny_onnx), "--backends", "ort,runtime,openvino,tensorrt,torch",
                                   "--imgsz", "64,96", "--batch", "1,2", "--iters", "3", "--warmup", "1",
                                   "--threads", "1", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout holds exactly one JSON object
    assert doc == json.loads((out / "latency.json").read_text())
    assert doc["meta"]["keys"] == ["backend", "device", "size", "batch"]
    assert doc["machine"]["cores_logical"] >= 1 and "versions" in doc["machine"]
    rows = {(r["backend"], r["size"], r["batch"]): r for r in doc["rows"]}
    for size in (64, 96):
        for batch in (1, 2):
            row = rows[("ort", size, batch)]
            assert row["status"] == "ok" and row["threads"] == 1
            check_row(row, batch)
    torch_row = next(r for r in doc["rows"] if r["backend"] == "torch")
    assert torch_row["status"].startswith("skipped: needs a checkpoint")
    ov = [r for r in doc["rows"] if r["backend"] == "openvino"]
    assert ov and all(r["status"] == "ok" for r in ov) if importlib.util.find_spec("openvino") else (
        len(ov) == 1 and ov[0]["status"].startswith("skipped: openvino is not installed"))
    trt = next(r for r in doc["rows"] if r["backend"] == "tensorrt")
    assert trt["status"].startswith("skipped:") or trt["status"] == "ok"
    assert "size64_batch1" in doc["summary"] and doc["summary"]["targets"]["runtime_post_share"] == 0.05
    for suffix in ("csv", "md", "png"):
        assert (out / f"latency.{suffix}").stat().st_size > 0
    md = (out / "latency.md").read_text()
    assert "| Backend | Device | Status | Size | Batch | p50 ms |" in md


def test_cli_table_and_bad_options(tiny_onnx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["--model", str(tiny_onnx), "--backends", "ort", "--imgsz", "64", "--iters", "2",
                              "--warmup", "0", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("| Backend |") and "| ort | cpu | ok | 64 | 1 |" in res.stdout
    res = runner.invoke(cli, ["--model", str(tiny_onnx), "--backends", "onnxrt", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown backend 'onnxrt'" in res.output
    res = runner.invoke(cli, ["--model", str(tiny_onnx), "--imgsz", "64,x", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--imgsz" in res.output
    assert parse_backends("ORT, torch,ort") == ["ort", "torch"]


def test_summary_ratios() -> None:
    def row(backend: str, p50: float, infer: float, post: float) -> dict:
        return {"backend": backend, "device": "cpu", "status": "ok", "size": 640, "batch": 1, "p50_ms": p50,
                "infer_ms": infer, "post_ms": post, "dets": 20.0}

    s = summarize_targets([row("ort", 12.0, 10.0, 1.5), row("runtime", 10.5, 9.8, 0.4), row("torch", 20.0, 15, 3)])
    e = s["size640_batch1"]
    assert e["runtime_over_ort_infer"] == pytest.approx(1.05)
    assert e["runtime_post_share"] == pytest.approx(0.4 / 10.5)
    assert e["torch_over_runtime"] == pytest.approx(20.0 / 10.5)
    assert e["meets"] == {"runtime_over_ort_infer": True, "runtime_post_share": True, "torch_over_runtime": True}
    s = summarize_targets([row("ort", 12.0, 10.0, 1.5)])
    assert s["size640_batch1"]["runtime_over_ort_infer"] is None
    assert s["size640_batch1"]["meets"]["runtime_over_ort_infer"] is None


def test_synthetic_images_shape() -> None:
    imgs = synthetic_images(64, 3)
    assert len(imgs) == 3 and imgs[0].shape == (48, 64, 3) and imgs[0].dtype == np.uint8
    assert imgs[0].std() > 10
    assert MAX_DETS > N_VALID


def test_models_side_by_side_over_interleaved_rounds(tiny_onnx: Path, tmp_path: Path) -> None:
    """Two models and --repeats 3: one row per model x backend x size x batch, labelled by the model's file name,
    with each round's p50 and their spread; the summary's ratios are per model."""
    import shutil

    from boxseg.bench.latency import run_latency

    onnx = tiny_onnx
    other = tmp_path / "copy.onnx"
    shutil.copy(onnx, other)
    rows = run_latency([onnx, other], ["ort", "runtime"], [96], [1], iters=2, warmup=0, threads=1, repeats=3)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted((r["model"], r["backend"]) for r in ok) == sorted(
        (m.name, b) for m in (onnx, other) for b in ("ort", "runtime"))
    for r in ok:
        rounds = [float(v) for v in r["round_p50_ms"].split()]
        assert r["rounds"] == 3 and len(rounds) == 3 and r["spread"] >= 0
        assert min(rounds) - 0.01 <= r["p50_ms"] <= max(rounds) + 0.01  # the pooled median (rounded to 0.01)
    summary = summarize_targets(rows)
    assert {k for k in summary if k != "targets"} == {f"{m.name}_size96_batch1" for m in (onnx, other)}


def test_side_by_side_torch_takes_checkpoints_and_engines_take_exports() -> None:
    from boxseg.bench.latency import backends_for

    ckpt, fp32, int8 = Path("last.pt"), Path("fp32.onnx"), Path("int8.onnx")
    names = ["torch", "ort", "runtime"]
    assert backends_for(ckpt, [ckpt], names) == names
    assert backends_for(ckpt, [ckpt, fp32, int8], names) == ["torch"]
    assert backends_for(int8, [ckpt, fp32, int8], names) == ["ort", "runtime"]
