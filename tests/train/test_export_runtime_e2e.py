"""Checkpoint -> ONNX -> boxseg.runtime: `boxseg predict --model` matches `boxseg predict --checkpoint`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
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
    for name in torch_res:
        a, b = torch_res[name], rt_res[name]
        assert len(a) == len(b), name
        # Pair each PyTorch detection with the runtime's best-overlapping one of the same class: near-equal scores
        # of an untrained model may be ordered differently by the two NMS implementations.
        boxes_b = [d["bbox"] for d in b]
        for d in a:
            overlaps = mask_utils.iou([d["bbox"]], boxes_b, [0] * len(b))[0]
            overlaps = [o if e["category_id"] == d["category_id"] else -1.0 for o, e in zip(overlaps, b)]
            j = int(np.argmax(overlaps))
            assert overlaps[j] >= 0.99, (name, d["bbox"], b[j]["bbox"])
            assert abs(d["score"] - b[j]["score"]) <= 1e-4
            if mask_utils.area(d["segmentation"]) + mask_utils.area(b[j]["segmentation"]) > 0:
                assert mask_utils.iou([d["segmentation"]], [b[j]["segmentation"]], [0])[0, 0] >= 0.95
    # An image smaller than the graph's boxseg.min_size is padded up to it by the runtime, not rejected.
    from boxseg.runtime import Predictor

    small = np.asarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3)), dtype=np.uint8)
    out = Predictor(onnx_path)(small)
    assert out["masks"].shape[1:] == (24, 40) and len(out["scores"]) == len(out["boxes"])
