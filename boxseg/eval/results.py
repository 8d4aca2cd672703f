"""Predictions -> COCO result dicts (what `boxseg.eval.coco_eval.evaluate` and `boxseg predict` consume)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def encode_masks(masks: np.ndarray) -> list[dict]:
    """bool (n, H, W) -> COCO RLEs `{"size": [H, W], "counts": str}` (str so the result is JSON-ready)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"encode_masks: masks must be (n, H, W), got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def instances_to_coco(
    image_id: int,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    masks_bool: np.ndarray | None,
    cat_ids: Sequence[int],
) -> list[dict]:
    """One image's detections as COCO result dicts.

    boxes_xyxy (n, 4) in original pixels; scores (n,); classes (n,) contiguous indices into `cat_ids`;
    masks_bool (n, H, W) or None (then the dicts carry no `segmentation` and only bbox AP can be computed).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    n = len(boxes)
    if len(scores) != n or len(classes) != n:
        raise ValueError(f"instances_to_coco: {n} boxes, {len(scores)} scores and {len(classes)} classes differ")
    if n and (classes.min() < 0 or classes.max() >= len(cat_ids)):
        raise ValueError(f"instances_to_coco: class indices must be in 0..{len(cat_ids) - 1}, "
                         f"got {classes.min()}..{classes.max()}")
    rles: list[dict] | None = None
    if masks_bool is not None:
        masks = np.asarray(masks_bool, dtype=bool)
        if len(masks) != n:
            raise ValueError(f"instances_to_coco: {len(masks)} masks for {n} boxes")
        rles = encode_masks(masks.reshape(n, *masks.shape[-2:]))
    out = []
    for k in range(n):
        x0, y0, x1, y1 = boxes[k]
        r = {"image_id": int(image_id), "category_id": int(cat_ids[int(classes[k])]),
             "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(scores[k])}
        if rles is not None:
            r["segmentation"] = rles[k]
        out.append(r)
    return out
