"""`boxseg eval --labels`: label metrics against values computed by hand on a hand-made dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from boxseg.cli import main
from boxseg.eval.labels import average_ranks, spearman
from boxseg.eval.results import encode_masks


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# (image id, size, GT mask rows/cols, label mask rows/cols or None, w, valid). IoUs by hand:
#   A 50/100 = 0.5, B 1.0, C 16/(32 + 8) = 0.4, D no mask (0), E 512/1024 = 0.5 (the one medium object)
CASES = {
    1: (1, 20, (0, 10, 0, 10), (0, 10, 0, 5), 0.9, True),
    2: (1, 20, (10, 20, 10, 20), (10, 20, 10, 20), 0.6, True),
    3: (1, 20, (0, 4, 12, 20), (0, 6, 12, 16), 0.5, True),
    4: (1, 20, (14, 18, 0, 5), None, 0.0, False),
    5: (2, 40, (0, 32, 0, 32), (0, 32, 0, 16), 0.8, True),
}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hand")
    (root / "data" / "images").mkdir(parents=True)
    images = [{"id": 1, "file_name": "a.png", "width": 20, "height": 20},
              {"id": 2, "file_name": "b.png", "width": 40, "height": 40}]
    for im in images:
        Image.new("RGB", (im["width"], im["height"])).save(root / "data" / "images" / im["file_name"])
    gt, labels = [], []
    for aid, (iid, size, g, lab, w, valid) in CASES.items():
        gm = _rect(size, size, *g)
        ys, xs = np.nonzero(gm)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        a = {"id": aid, "image_id": iid, "category_id": 1, "bbox": bbox, "iscrowd": 0, "area": float(gm.sum()),
             "segmentation": encode_masks(gm[None])[0]}
        gt.append(a)
        b = {k: v for k, v in a.items() if k != "segmentation"}
        b.update(boxseg_quality=w, boxseg_valid=valid, boxseg_source="qam" if valid else "none")
        if lab is not None:
            lm = _rect(size, size, *lab)
            b.update(segmentation=encode_masks(lm[None])[0], area=float(lm.sum()))
        labels.append(b)
    cats = [{"id": 1, "name": "thing"}]
    (root / "data" / "annotations.json").write_text(json.dumps({"images": images, "annotations": gt,
                                                                "categories": cats}))
    (root / "labels").mkdir()
    (root / "labels" / "annotations.json").write_text(json.dumps({"images": images, "annotations": labels,
                                                                  "categories": cats}))
    return root / "data", root / "labels" / "annotations.json"


def test_rank_correlation_by_hand():
    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1.0], [2.0]) is None
    # the labels below: w ranks 4,2,1,3; IoU ranks 2.5,4,1,2.5 -> 1.5 / sqrt(5 * 4.5)
    assert spearman([0.9, 0.6, 0.5, 0.8], [0.5, 1.0, 0.4, 0.5]) == pytest.approx(1 / math.sqrt(10))


def test_eval_labels_against_hand_computed_values(hand_made: tuple[Path, Path], tmp_path: Path):
    data, labels = hand_made
    r = CliRunner().invoke(main, ["eval", "--data", str(data), "--labels", str(labels), "--cuts", "0.5,0.7,0.9,0.95",
                                  "--report-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (res["annotations"], res["valid"], res["valid_fraction"]) == (5, 4, 0.8)
    assert res["miou"] == pytest.approx((0.5 + 1.0 + 0.4 + 0.5) / 4)
    assert res["miou_all"] == pytest.approx((0.5 + 1.0 + 0.4 + 0.0 + 0.5) / 5)
    assert res["by_size"]["small"] == {"miou": pytest.approx(1.9 / 3), "count": 3, "gt_count": 4}
    assert res["by_size"]["medium"] == {"miou": pytest.approx(0.5), "count": 1, "gt_count": 1}
    assert res["by_size"]["large"] == {"miou": None, "count": 0, "gt_count": 0}
    assert res["by_source"] == {"none": {"miou": 0.0, "count": 1}, "qam": {"miou": pytest.approx(0.6), "count": 4}}
    assert res["spearman_w_iou"] == pytest.approx(1 / math.sqrt(10))
    assert res["curve"] == [
        {"min_quality": 0.5, "kept": 4, "kept_fraction": 0.8, "miou": pytest.approx(0.6)},
        {"min_quality": 0.7, "kept": 2, "kept_fraction": 0.4, "miou": pytest.approx(0.5)},
        {"min_quality": 0.9, "kept": 1, "kept_fraction": 0.2, "miou": pytest.approx(0.5)},
        {"min_quality": 0.95, "kept": 0, "kept_fraction": 0.0, "miou": None},
    ]
    assert 0 < res["segm"]["AP"] < 100
    assert json.loads((tmp_path / "label_eval.json").read_text())["miou"] == res["miou"]
    assert Image.open(tmp_path / "label_eval.png").size[0] > 100
    text = CliRunner().invoke(main, ["eval", "--data", str(data), "--labels", str(labels),
                                     "--report-dir", str(tmp_path)]).output
    assert "Spearman(w, IoU): 0.316" in text and "w >= 0.70: kept 2 (40.0%), mean IoU 0.500" in text


def test_perfect_labels_score_full_marks(hand_made: tuple[Path, Path], tmp_path: Path):
    data, _ = hand_made
    gt = json.loads((data / "annotations.json").read_text())
    for k, a in enumerate(gt["annotations"]):
        a.update(boxseg_quality=0.5 + 0.1 * k, boxseg_valid=True, boxseg_source="qam")
    (tmp_path / "perfect.json").write_text(json.dumps(gt))
    from boxseg.eval.labels import evaluate_labels

    res = evaluate_labels(data, tmp_path / "perfect.json")
    assert res["miou"] == 1.0 and res["segm"]["AP"] == 100.0 and res["spearman_w_iou"] is None  # IoU constant


def test_labels_of_another_dataset_are_refused(hand_made: tuple[Path, Path], tmp_path: Path):
    data, labels = hand_made
    lab = json.loads(labels.read_text())
    lab["annotations"] = lab["annotations"][1:]
    (tmp_path / "fewer.json").write_text(json.dumps(lab))
    r = CliRunner().invoke(main, ["eval", "--data", str(data), "--labels", str(tmp_path / "fewer.json")])
    assert r.exit_code == 1 and "no label for annotation id=1" in r.output
    r = CliRunner().invoke(main, ["eval", "--data", str(data), "--labels", str(labels), "--baseline", "ellipse"])
    assert r.exit_code == 2 and "exactly one of" in r.output
    # a label file is not ground truth for mask AP (its invalid labels have no mask)
    r = CliRunner().invoke(main, ["eval", "--data", str(labels), "--baseline", "ellipse"])
    assert r.exit_code == 1 and "has no 'segmentation'" in r.output
