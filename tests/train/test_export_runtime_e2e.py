"""Checkpoint -> ONNX -> boxseg.runtime: `boxseg predict --model` matches `boxseg predict --checkpoint`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from boxseg.export.verify import Tolerances, compare_detections
from boxseg.train.loop import Trainer
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from boxseg.cli import main


@pytest.fixture
def trained(tmp_path: Path, make_cfg) -> Path:
    out = tmp_path / "run"
    # A high prior so an almost untrained model already scores above the 0.05 threshold; 20 detections per image.
    cfg = make_cfg(out, "solver.max_iter=6", "model.prior_prob=0.3", "model.max_dets=20")
    Trainer(cfg).train()
    return out / "checkpoints" / "last.pt"


def _by_image(results: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r["file_name"], []).append(r)
    return {k: sorted(v, key=lambda r: -r["score"]) for k, v in out.items()}


def _as_outputs(dets: list[dict], slots: int) -> dict[str, np.ndarray]:
    """One image's COCO results as padded graph outputs (batch 1, `slots` rows), for compare_detections."""
    h, w = dets[0]["segmentation"]["size"] if dets else (1, 1)
    out = {"boxes": np.zeros((1, slots, 4), np.float32), "scores": np.zeros((1, slots), np.float32),
           "classes": np.full((1, slots), -1, np.int64), "masks": np.zeros((1, slots, h, w), np.float32),
           "num_dets": np.array([len(dets)], np.int64)}
    for i, d in enumerate(dets):
        x, y, bw, bh = d["bbox"]
        out["boxes"][0, i] = [x, y, x + bw, y + bh]
        out["scores"][0, i], out["classes"][0, i] = d["score"], d["category_id"]
    if dets:
        out["masks"][0, :len(dets)] = mask_utils.decode([d["segmentation"] for d in dets]).transpose(2, 0, 1)
    return out


def test_runtime_predictions_match_pytorch(trained: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    onnx_path = tmp_path / "model.onnx"
    r = CliRunner().invoke(main, ["export", "--checkpoint", str(trained), "--format", "onnx", "--out",
                                  str(onnx_path), "--imgsz", "160", "160"])
    assert r.exit_code == 0, r.output
    images = tiny_data["val"] / "images"
    runs = {}
    for flag, path in (("--checkpoint", trained), ("--model", onnx_path)):
        out = tmp_path / flag.strip("-")
        r = CliRunner().invoke(main, ["predict", flag, str(path), "--images", str(images), "--out", str(out),
                                      "--score-thr", "0.05", "--batch", "1", "--no-overlays"])
        assert r.exit_code == 0, r.output
        runs[flag] = _by_image(json.loads((out / "results.json").read_text()))
    torch_res, rt_res = runs["--checkpoint"], runs["--model"]
    assert torch_res.keys() == rt_res.keys() and sum(len(v) for v in torch_res.values()) > 0
    # The exporter's rule: pairs by class, score and box; a detection may be missing on one side only where its
    # score sits on the 0.05 threshold or on the last of the 20 slots (near-equal scores of an almost untrained
    # model round differently in the two implementations). Pasted masks: IoU >= 0.95 (resampling differs).
    tol = Tolerances(mask_iou=0.95)
    for name in torch_res:
        report = compare_detections(_as_outputs(torch_res[name], 20), _as_outputs(rt_res[name], 20), tol,
                                    score_threshold=0.05)
        assert report["passed"], (name, report["failures"])
    # An image smaller than the graph's boxseg.min_size is padded up to it by the runtime, not rejected.
    from boxseg.runtime import Predictor

    small = np.asarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3)), dtype=np.uint8)
    out = Predictor(onnx_path)(small)
    assert out["masks"].shape[1:] == (24, 40) and len(out["scores"]) == len(out["boxes"])
