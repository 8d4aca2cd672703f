"""Trivial baselines: their masks follow the pixel-centre rule, and their AP is 100 exactly when GT fits them."""

from __future__ import annotations

import numpy as np
import pytest

from boxseg.eval.baselines import baseline_results, box_mask
from boxseg.eval.coco_eval import evaluate
from boxseg.eval.results import encode_masks

H, W = 48, 64


def test_box_fill_covers_exactly_the_integer_box() -> None:
    m = box_mask([5, 7, 10, 4], H, W, "box-fill")
    ref = np.zeros((H, W), bool)
    ref[7:11, 5:15] = True
    np.testing.assert_array_equal(m, ref)


def test_ellipse_is_inscribed_in_the_box() -> None:
    m = box_mask([4, 6, 40, 30], H, W, "ellipse")
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert (cols[0], cols[-1], rows[0], rows[-1]) == (4, 43, 6, 35)  # touches all four sides, stays inside
    assert m.sum() == pytest.approx(np.pi * 20 * 15, rel=0.03)
    assert not box_mask([4, 6, 0, 30], H, W, "ellipse").any()
    with pytest.raises(ValueError, match="unknown baseline"):
        box_mask([0, 0, 1, 1], H, W, "circle")


def _gt_of(kind: str) -> dict:
    boxes = [[3, 4, 20, 12], [30, 10, 28, 30]]
    anns = []
    for k, b in enumerate(boxes):
        m = box_mask(b, H, W, kind)
        anns.append({"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": int(m.sum()), "iscrowd": 0,
                     "segmentation": encode_masks(m[None])[0]})
    return {"images": [{"id": 1, "file_name": "x.png", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "thing"}], "annotations": anns}


def test_baseline_ap_is_100_on_its_own_shapes_and_lower_on_the_other() -> None:
    rect_gt, ell_gt = _gt_of("box-fill"), _gt_of("ellipse")
    assert evaluate(rect_gt, baseline_results(rect_gt, "box-fill"))["segm"]["AP"] == pytest.approx(100.0)
    assert evaluate(ell_gt, baseline_results(ell_gt, "ellipse"))["segm"]["AP"] == pytest.approx(100.0)
    # A filled box on an ellipse has IoU ~pi/4: thresholds 0.50..0.75 hit, 0.85+ miss (0.80 is pixel luck).
    m = evaluate(ell_gt, baseline_results(ell_gt, "box-fill"))
    assert m["segm"]["AP75"] == pytest.approx(100.0) and 60 - 1e-6 <= m["segm"]["AP"] <= 70 + 1e-6
    assert m["bbox"]["AP"] == pytest.approx(100.0)  # baseline boxes are the GT boxes


def test_baselines_skip_crowd_and_keep_classes() -> None:
    gt = _gt_of("box-fill")
    gt["categories"].append({"id": 4, "name": "other"})
    gt["annotations"][0]["category_id"] = 4
    gt["annotations"][1]["iscrowd"] = 1
    res = baseline_results(gt, "ellipse")
    assert len(res) == 1 and res[0]["category_id"] == 4 and res[0]["score"] == 1.0


def test_ellipse_in_predicted_boxes_keeps_boxes_scores_and_classes(tmp_path):
    """The ellipse drawn in a model's own detections: same box, class and score; the mask is that box's ellipse."""
    import json

    from pycocotools import mask as mask_utils

    from boxseg.eval.baselines import box_mask, masks_in_predicted_boxes
    from boxseg.eval.results import encode_masks

    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
          "categories": [{"id": 3, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 8], "area": 80,
                           "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]],
                           "iscrowd": 0}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    full = encode_masks(np.ones((1, 20, 30), dtype=bool))[0]
    preds = [{"image_id": 1, "category_id": 3, "bbox": [4.0, 3.0, 12.0, 6.0], "score": 0.7, "segmentation": full}]
    out = masks_in_predicted_boxes(preds, path)
    assert [(r["bbox"], r["score"], r["category_id"]) for r in out] == [([4.0, 3.0, 12.0, 6.0], 0.7, 3)]
    assert np.array_equal(mask_utils.decode(out[0]["segmentation"]).astype(bool),
                          box_mask((4.0, 3.0, 12.0, 6.0), 20, 30, "ellipse"))
    assert preds[0]["segmentation"] is full  # the input is left alone
