"""Hostile ways to lose work: predicting over the inputs, training over a finished run, empty training data,
leftovers of killed saves, foreign checkpoint files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from boxseg.runtime.testing import make_test_model
from click.testing import CliRunner
from PIL import Image

from boxseg.cli import main
from boxseg.config import config_to_dict
from boxseg.model.config import ModelConfig

SIZE = 64


def _images(folder: Path, n: int = 2) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"im{k}.png")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _unchanged(folder: Path, before: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} == before


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("lost_work_model") / "m.onnx", max_dets=4, num_valid=2)


@pytest.mark.parametrize("where", ["same", "parent", "file_in_it"])
def test_predict_refuses_to_write_among_its_inputs(tmp_path: Path, onnx_model: Path, where: str) -> None:
    images = tmp_path / "photos"
    before = _images(images)
    src, out = {"same": (images, images), "parent": (images, tmp_path),
                "file_in_it": (images / "im0.png", images)}[where]
    r = CliRunner().invoke(main, ["predict", "--model", str(onnx_model), "--images", str(src), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "the input folder" in r.output and "could overwrite them" in r.output and "--out" in r.output
    assert _unchanged(images, before)
    assert not (tmp_path / "results.json").exists()


def test_predict_into_a_subfolder_of_the_inputs_is_fine(tmp_path: Path, onnx_model: Path) -> None:
    images = tmp_path / "photos"
    before = _images(images)
    r = CliRunner().invoke(main, ["predict", "--model", str(onnx_model), "--images", str(images), "--out",
                                  str(images / "overlays"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 2
    assert {p.name for p in images.iterdir()} == set(before) | {"overlays"}
    assert all((images / name).read_bytes() == data for name, data in before.items())


# ------------------------------------------------------------------------------------------------- training


def _tiny_model_overrides() -> list[str]:
    tiny, default = config_to_dict(ModelConfig.tiny(num_classes=2)), config_to_dict(ModelConfig())
    return [f"model.{k}={json.dumps(v)}" for k, v in tiny.items() if v != default[k]]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "boxinst", "--data", str(data), "--out", str(out), "--iters", "1", "--batch",
            "2", "--device", "cpu", "--workers", "0", *_tiny_model_overrides(), f"input.train_scales=[{SIZE}]",
            f"input.test_size={SIZE}", "runtime.progress=false", "runtime.threads=1", *extra]


def _train_data(root: Path, annotations: list[dict] | None = None) -> Path:
    _images(root / "images", 3)
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [30, 10, 20, 30], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "iscrowd": 0},  # clipped
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5], "iscrowd": 0},  # degenerate
            {"id": 5, "image_id": 1, "category_id": 2, "bbox": [-40, 0, 10, 10], "iscrowd": 0},  # outside
        ]
    data = {"images": [{"id": k + 1, "file_name": f"im{k}.png", "width": SIZE, "height": SIZE} for k in range(3)],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": annotations}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def test_train_never_replaces_a_finished_run_silently(tmp_path: Path) -> None:
    data = _train_data(tmp_path / "data")
    run = tmp_path / "run"
    first = CliRunner().invoke(main, _train_args(data, run))
    assert first.exit_code == 0, first.output
    # The dataset report is printed: boxes used, clipped, dropped; images without boxes.
    assert "train data: 3 images (1 without boxes), 3 boxes used of 5 annotations" in first.stdout
    assert "1 clipped to the image" in first.stdout and "1 dropped as degenerate" in first.stdout
    assert "1 dropped as outside the image" in first.stdout
    kept = {p: p.read_bytes() for p in (run / "checkpoints" / "last.pt", run / "metrics.jsonl", run / "config.yaml")}
    assert kept[run / "metrics.jsonl"]  # something to lose

    again = CliRunner().invoke(main, _train_args(data, run))
    assert again.exit_code == 2
    assert "already has a checkpoint" in again.output and "--resume" in again.output
    assert "--overwrite" in again.output
    assert all(p.read_bytes() == b for p, b in kept.items())  # metrics.jsonl was not emptied

    both = CliRunner().invoke(main, _train_args(data, run, "--resume", "--overwrite"))
    assert both.exit_code == 2 and "exclude each other" in both.output

    # A save killed mid-write left its hidden temporary file; --overwrite starts again and cleans it up.
    stale = run / "checkpoints" / ".last.pt.k3x9_a2b.tmp"
    stale.write_bytes(b"\0" * 4096)
    unrelated = run / "checkpoints" / "notes.tmp"
    unrelated.write_text("mine")
    over = CliRunner().invoke(main, _train_args(data, run, "--overwrite", "--json"))
    assert over.exit_code == 0, over.output
    assert not stale.exists() and unrelated.read_text() == "mine"
    assert "interrupted checkpoint save" in over.stderr
    summary = json.loads(over.stdout)
    assert summary["dataset"]["boxes"] == 3 and summary["dataset"]["boxes_clipped"] == 1
    assert summary["dataset"]["boxes_dropped_degenerate"] == 1 and summary["dataset"]["images_without_boxes"] == 1
    from boxseg.train.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 1


@pytest.mark.parametrize("annotations", [[], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 0]}]],
                         ids=["no_annotations", "only_degenerate"])
def test_an_empty_training_set_is_an_error(tmp_path: Path, annotations: list[dict]) -> None:
    data = _train_data(tmp_path / "data", annotations)
    r = CliRunner().invoke(main, _train_args(data, tmp_path / "run"))
    assert r.exit_code == 1
    assert "the training set has no usable boxes" in r.output and str(data / "annotations.json") in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_resume_cleans_up_a_killed_save_without_touching_the_run(tmp_path: Path) -> None:
    from boxseg.train.run_dir import prepare_run_dir

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.pt").write_bytes(b"the run")
    stale = [ckpts / ".last.pt.abcdefgh.tmp", ckpts / ".best.pt.0123_xyz.tmp"]
    for p in stale:
        p.write_bytes(b"")
    state = prepare_run_dir(tmp_path / "run", resume=True)
    assert sorted(state.removed_temp_files) == sorted(stale) and not any(p.exists() for p in stale)
    assert (ckpts / "last.pt").read_bytes() == b"the run" and state.removed_checkpoints == []


def test_export_cleans_up_empty_temp_files_of_a_killed_export(tmp_path: Path) -> None:
    from boxseg.export.atomic import atomic_outputs

    out = tmp_path / "model.onnx"
    stale = tmp_path / ".model.onnx.x1y2z3w4.tmp"  # mkstemp ran, then the process was killed
    stale.write_bytes(b"")
    other = tmp_path / ".other.onnx.x1y2z3w4.tmp"  # another output's: not ours to remove
    other.write_bytes(b"")
    with atomic_outputs(out) as (tmp,):
        tmp.write_bytes(b"graph")
    assert out.read_bytes() == b"graph" and not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.onnx.x1y2z3w4.tmp", "model.onnx"]


# ------------------------------------------------------------------------------------------------- checkpoints


class Opaque:
    """A class torch.load(weights_only=True) refuses, as it refuses any object outside its allow-list."""


@pytest.mark.parametrize("kind", ["pickled_object", "random_bytes", "empty", "folder"])
def test_foreign_checkpoint_files_get_a_safe_complete_message(tmp_path: Path, kind: str) -> None:
    import os

    import torch

    path = tmp_path / "model.pt"
    if kind == "pickled_object":
        torch.save({"model": Opaque()}, path)  # unpickling it would run this module's code
    elif kind == "random_bytes":
        path.write_bytes(os.urandom(2048))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.mkdir()
    images = tmp_path / "imgs"
    _images(images, 1)
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(path), "--images", str(images), "--out",
                                  str(tmp_path / "out")])
    assert r.exit_code in (1, 2), r.output  # a folder is refused by the option itself (exit 2)
    assert str(path) in r.output or "model.pt" in r.output
    assert "weights_only=False" not in r.output and "Traceback" not in r.output
    if kind == "pickled_object":
        assert "Unsupported global" in r.output and "never unpickles arbitrary objects" in r.output
    if kind != "folder":
        assert r.exit_code == 1 and "expected a BoxSeg training checkpoint written by `boxseg train`" in r.output
