"""COCO evaluation on tiny hand-made cases whose AP is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from boxseg.eval.coco_eval import METRICS, evaluate, format_table, load_gt
from boxseg.eval.results import encode_masks, instances_to_coco

H, W = 64, 64


def _mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _gt(masks: list[np.ndarray], cats: list[int], image_ids: list[int] | None = None) -> dict:
    anns = []
    for k, (m, c) in enumerate(zip(masks, cats)):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        anns.append({"id": k + 1, "image_id": 1, "category_id": c, "iscrowd": 0, "area": int(m.sum()),
                     "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)],
                     "segmentation": encode_masks(m[None])[0]})
    ids = image_ids or [1, 2]  # image 2 has no objects: a negative
    return {"images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in ids],
            "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}], "annotations": anns}


def _perfect(gt: dict, score: float = 1.0) -> list[dict]:
    out = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x, y, w, h],
                    "score": score, "segmentation": a["segmentation"]})
    return out


GT_MASKS = [_mask(2, 2, 14, 12), _mask(20, 20, 60, 60)]  # one small (120 px), one medium (1600 px)


def test_perfect_predictions_give_ap_100() -> None:
    gt = _gt(GT_MASKS, [1, 3])
    m = evaluate(gt, _perfect(gt))
    for t in ("segm", "bbox"):
        assert m[t]["AP"] == pytest.approx(100.0)
        assert m[t]["AP50"] == pytest.approx(100.0) and m[t]["AP75"] == pytest.approx(100.0)
        assert m[t]["APs"] == pytest.approx(100.0) and m[t]["APm"] == pytest.approx(100.0)
        assert m[t]["APl"] is None  # no large object in the ground truth: undefined, not a fake number
        assert set(m[t]) == set(METRICS)


def test_no_predictions_give_zero_not_a_crash() -> None:
    m = evaluate(_gt(GT_MASKS, [1, 3]), [])
    for t in ("segm", "bbox"):
        assert m[t]["AP"] == 0.0 and m[t]["AP50"] == 0.0 and m[t]["APs"] == 0.0


def test_wrong_class_scores_zero() -> None:
    gt = _gt(GT_MASKS, [1, 1])
    preds = _perfect(gt)
    for p in preds:
        p["category_id"] = 3
    assert evaluate(gt, preds)["segm"]["AP"] == 0.0


def test_half_recall_gives_51_of_101_recall_points() -> None:
    gt = _gt(GT_MASKS, [1, 1])
    m = evaluate(gt, _perfect(gt)[:1], per_category=True)
    assert m["segm"]["AP"] == pytest.approx(100 * 51 / 101, abs=1e-3)
    assert m["segm"]["per_category"] == {"a": pytest.approx(100 * 51 / 101, abs=1e-3), "b": None}


def test_mask_quality_separates_segm_from_bbox() -> None:
    # Right box, mask with IoU 0.6 to the GT: bbox AP 100, segm AP50 100 but AP75 0.
    gt = _gt([_mask(20, 20, 60, 60)], [1])
    pred = _perfect(gt)
    pred[0]["segmentation"] = encode_masks(_mask(20, 20, 44, 60)[None])[0]
    m = evaluate(gt, pred)
    assert m["bbox"]["AP"] == pytest.approx(100.0)
    assert m["segm"]["AP50"] == pytest.approx(100.0) and m["segm"]["AP75"] == 0.0


def test_segm_uses_the_mask_area_not_the_box_area() -> None:
    # A higher-scored false positive with a tiny mask but a huge box: by mask area it is "small" and must count
    # against APs (pycocotools would file it under the box area and ignore it).
    gt = _gt([_mask(2, 2, 14, 12)], [1])
    pred = _perfect(gt, score=0.5)
    pred.append({"image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 64], "score": 0.9,
                 "segmentation": encode_masks(_mask(40, 40, 45, 45)[None])[0]})
    assert evaluate(gt, pred, ("segm",))["segm"]["APs"] == pytest.approx(50.0, abs=1.0)


def test_inputs_path_dict_and_missing_area(tmp_path: Path) -> None:
    gt = _gt(GT_MASKS, [1, 3])
    for a in gt["annotations"]:
        del a["area"], a["iscrowd"]
    (tmp_path / "annotations.json").write_text(json.dumps(gt))
    coco = load_gt(tmp_path)
    assert coco.anns[1]["area"] == GT_MASKS[0].sum() and coco.anns[1]["iscrowd"] == 0
    assert evaluate(tmp_path / "annotations.json", _perfect(gt))["segm"]["APs"] == pytest.approx(100.0)
    assert evaluate(coco, _perfect(gt), ("bbox",)).keys() == {"bbox"}


def test_bad_results_name_the_entry_and_field() -> None:
    gt = _gt(GT_MASKS, [1, 3])
    bad = _perfect(gt)
    bad[1]["image_id"] = 42
    with pytest.raises(ValueError, match=r"results\[1\].*'image_id' 42"):
        evaluate(gt, bad)
    bad = _perfect(gt)
    del bad[0]["segmentation"]
    with pytest.raises(ValueError, match=r"results\[0\].*'segmentation'"):
        evaluate(gt, bad)
    assert evaluate(gt, bad, ("bbox",))["bbox"]["AP"] == pytest.approx(100.0)


def test_instances_to_coco_round_trip() -> None:
    masks = np.stack(GT_MASKS)
    res = instances_to_coco(1, np.array([[2, 2, 14, 12], [20, 20, 60, 60]]), np.array([0.9, 0.8]),
                            np.array([0, 1]), masks, cat_ids=[1, 3])
    json.dumps(res)  # JSON-ready: counts are str
    assert [r["category_id"] for r in res] == [1, 3]
    assert res[1]["bbox"] == [20.0, 20.0, 40.0, 40.0] and res[0]["score"] == pytest.approx(0.9)
    m = evaluate(_gt(GT_MASKS, [1, 3]), res)
    assert m["segm"]["AP"] == pytest.approx(100.0) and m["bbox"]["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="class indices"):
        instances_to_coco(1, np.zeros((1, 4)), [1.0], [2], None, cat_ids=[1, 3])
    assert "segmentation" not in instances_to_coco(1, np.zeros((1, 4)), [1.0], [0], None, [1])[0]


def test_format_table_has_every_metric() -> None:
    text = format_table({"segm": {m: 12.345 for m in METRICS}, "bbox": {m: None for m in METRICS}})
    assert all(m in text for m in METRICS) and "12.3" in text and "-" in text.splitlines()[2]
