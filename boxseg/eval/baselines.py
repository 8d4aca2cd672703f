"""Trivial mask predictors built from the GT boxes: every learned mask AP is read against these.

`box-fill` predicts the filled GT box, `ellipse` the ellipse inscribed in it; both with the GT class and score 1,
so their box AP is 100 and their mask AP measures only how far masks are from boxes (or ellipses).
`masks_in_predicted_boxes` puts the same shapes into a model's own detections instead: the model's mask AP against
that tells mask quality apart from detection quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from boxseg.eval.coco_eval import load_gt
from boxseg.eval.results import encode_masks

BASELINES = ("box-fill", "ellipse")


def box_mask(bbox_xywh: tuple[float, float, float, float], height: int, width: int, kind: str) -> np.ndarray:
    """bool (height, width): pixels whose centres fall in the box (`box-fill`) or its inscribed ellipse."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    cols = np.arange(width, dtype=np.float64) + 0.5
    rows = np.arange(height, dtype=np.float64) + 0.5
    if kind == "box-fill":
        return ((rows >= y) & (rows <= y + h))[:, None] & ((cols >= x) & (cols <= x + w))[None, :]
    if kind == "ellipse":
        if w <= 0 or h <= 0:
            return np.zeros((height, width), dtype=bool)
        du = ((cols - (x + w / 2)) / (w / 2)) ** 2
        dv = ((rows - (y + h / 2)) / (h / 2)) ** 2
        return dv[:, None] + du[None, :] <= 1.0
    raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")


def baseline_results(gt: str | Path | COCO, kind: str) -> list[dict]:
    """COCO results that predict, for every non-crowd GT annotation, its box and a `kind` mask, score 1."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")
    coco = load_gt(gt)
    out = []
    for iid in sorted(coco.imgs):
        img = coco.imgs[iid]
        anns = [a for a in coco.imgToAnns.get(iid, []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        masks = np.stack([box_mask(a["bbox"], img["height"], img["width"], kind) for a in anns])
        for a, rle in zip(anns, encode_masks(masks)):
            out.append({"image_id": iid, "category_id": a["category_id"], "bbox": [float(v) for v in a["bbox"]],
                        "score": 1.0, "segmentation": rle})
    return out


def masks_in_predicted_boxes(results: list[dict], gt: str | Path | COCO, kind: str = "ellipse") -> list[dict]:
    """A model's COCO results with each mask replaced by the `kind` shape of its own predicted box (same box, class
    and score)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")
    coco = load_gt(gt)
    out = []
    for r in results:
        img = coco.imgs[r["image_id"]]
        mask = box_mask(r["bbox"], img["height"], img["width"], kind)
        out.append({**r, "segmentation": encode_masks(mask[None])[0]})
    return out
