"""`boxseg train`, `boxseg predict` and checkpoint evaluation end to end on the tiny model, plus error paths."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from boxseg.cli import main
from boxseg.config import config_to_dict
from boxseg.model.config import ModelConfig


def _tiny_model_overrides() -> list[str]:
    """key=value overrides that turn the preset's model into ModelConfig.tiny (exercises override parsing)."""
    tiny, default = config_to_dict(ModelConfig.tiny(num_classes=4)), config_to_dict(ModelConfig())
    return [f"model.{k}={json.dumps(v)}" for k, v in tiny.items() if v != default[k]]


def _train_args(data, out, *extra: str) -> list[str]:
    return ["train", "--preset", "boxinst", "--data", str(data["train"]), "--out", str(out), "--iters", "2",
            "--batch", "2", "--device", "cpu", "--workers", "0", *_tiny_model_overrides(),
            "input.train_scales=[64]", "input.test_size=64", "runtime.progress=false", "runtime.threads=1", *extra]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(main, _train_args(tiny_data, out, "--val-data", str(tiny_data["val"]), "--json"))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_cli_train_writes_the_run_folder(trained_run):
    out, summary = trained_run
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "metrics.jsonl").is_file()
    assert (out / "config.yaml").is_file()
    assert summary["checkpoint"] == str(out / "checkpoints" / "last.pt") and summary["iterations"] == 2
    assert set(summary["eval"]) == {"segm", "bbox"} and "AP" in summary["eval"]["segm"]
    assert set(summary["final_losses"]) >= {"loss_cls", "loss_proj", "loss_pair", "total"}


def test_cli_resume_from_run_folder_alone(trained_run, tiny_data):
    out, _ = trained_run
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--iters", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["start_iteration"] == 2 and summary["iterations"] == 3


def test_evaluate_checkpoint_and_predict(trained_run, tiny_data, tmp_path):
    from boxseg.eval.predict import evaluate_checkpoint

    out, _ = trained_run
    ckpt = out / "checkpoints" / "last.pt"
    metrics = evaluate_checkpoint(ckpt, tiny_data["val"], batch_size=2)
    assert set(metrics) == {"segm", "bbox"} and all(0 <= metrics[t]["AP"] <= 100 for t in metrics)

    pred_dir = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--images",
                                       str(tiny_data["val"] / "images"), "--out", str(pred_dir),
                                       "--score-thr", "0.0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    images = sorted((tiny_data["val"] / "images").iterdir())
    assert summary["images"] == len(images)
    results = json.loads((pred_dir / "results.json").read_text())
    assert len(results) == summary["instances"] > 0  # threshold 0: even an untrained model detects something
    r = results[0]
    assert {"image_id", "category_id", "bbox", "score", "segmentation", "file_name"} <= set(r)
    assert 1 <= r["category_id"] <= 4 and r["segmentation"]["size"] == [64, 64]
    for f in images:
        overlay = Image.open(pred_dir / f"{f.stem}.png")
        assert overlay.size == Image.open(f).size


def test_cli_eval_checkpoint(trained_run, tiny_data):
    out, _ = trained_run
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data",
                                       str(tiny_data["val"]), "--json"])
    assert result.exit_code == 0, result.output
    assert {"segm", "bbox"} <= set(json.loads(result.stdout))


@pytest.mark.parametrize("args, message", [
    (["--preset", "boxinstt"], "unknown preset 'boxinstt'"),
    (["--preset", "boxinst", "solver.lr=abc"], "key 'solver.lr' got 'abc' (str); expected float"),
    (["--preset", "boxinst", "solver.lrate=0.1"], "did you mean 'solver.lr'"),
    (["--preset", "boxinst", "stray"], "overrides look like key=value"),
    ([], "--preset is required"),
])
def test_cli_train_bad_input(tmp_path, tiny_data, args, message):
    result = CliRunner().invoke(main, ["train", "--data", str(tiny_data["train"]), "--out", str(tmp_path), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_train_missing_data_folder(tmp_path):
    result = CliRunner().invoke(main, ["train", "--preset", "boxinst", "--data", str(tmp_path / "nope"),
                                       "--out", str(tmp_path / "run"), *_tiny_model_overrides()])
    assert result.exit_code == 1 and "nope" in result.output and "Traceback" not in result.output


def test_cli_predict_rejects_foreign_checkpoint_and_missing_images(tmp_path, tiny_data):
    import torch

    bogus = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bogus)
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(bogus), "--images",
                                       str(tiny_data["val"] / "images"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "expected 'boxseg-checkpoint'" in result.output
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(bogus), "--images", str(tmp_path / "none"),
                                       "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "no such file or folder" in result.output
    result = CliRunner().invoke(main, ["predict", "--images", "x", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "exactly one of --checkpoint" in result.output
