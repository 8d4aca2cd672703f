"""COCO mask and box AP through pycocotools' COCOeval, with its prints silenced and its edge cases handled."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from boxseg.data.coco import load_json
from boxseg.data.errors import DataError

METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES: tuple[str, ...] = ("segm", "bbox")


def _quiet(verbose: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: str | Path | COCO | dict, verbose: bool = False) -> COCO:
    """A pycocotools COCO for a JSON path, a COCO dict or an existing COCO object (returned as is).

    Missing `area` (needed for APs/APm/APl) is filled from the mask, or the box when there is no mask;
    missing `iscrowd` becomes 0.
    """
    if isinstance(gt, COCO):
        return gt
    path = None
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if path.is_dir():
            path = path / "annotations.json"
        data = load_json(path)
    else:
        data = copy.deepcopy(gt)
    where = str(path) if path else "ground truth"
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise DataError(f"{where}: expected a COCO object with lists 'images', 'annotations', 'categories'")
    sizes = {im.get("id"): (im.get("height"), im.get("width")) for im in data["images"] if isinstance(im, dict)}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a or "bbox" not in a:
            raise DataError(f"{where}: annotation {a.get('id') if isinstance(a, dict) else a!r}: "
                            f"needs 'image_id' and 'bbox'")
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            seg = a.get("segmentation")
            if seg:
                h, w = sizes.get(a["image_id"], (None, None))
                if isinstance(seg, list):  # polygons: their union
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(seg, h, w)
                else:
                    rle = seg
                a["area"] = float(mask_utils.area(rle))
            else:
                a["area"] = float(a["bbox"][2] * a["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with _quiet(verbose):
        coco.createIndex()
    return coco


def _check_results(coco: COCO, results: Sequence[dict], iou_types: Iterable[str]) -> None:
    img_ids, cat_ids = set(coco.getImgIds()), set(coco.getCatIds())
    for k, r in enumerate(results):
        if not isinstance(r, dict):
            raise TypeError(f"results[{k}]: must be a dict, got {type(r).__name__}")
        for field in ("image_id", "category_id", "score"):
            if field not in r:
                raise ValueError(f"results[{k}]: missing field {field!r}")
        if r["image_id"] not in img_ids:
            raise ValueError(f"results[{k}]: field 'image_id' {r['image_id']} is not an image of the ground truth")
        if r["category_id"] not in cat_ids:
            raise ValueError(f"results[{k}]: field 'category_id' {r['category_id']} is not a ground-truth "
                             f"category (known: {sorted(cat_ids)})")
        if "segm" in iou_types and "segmentation" not in r:
            raise ValueError(f"results[{k}]: missing field 'segmentation' (needed for segm AP)")
        if "bbox" in iou_types and "bbox" not in r and "segmentation" not in r:
            raise ValueError(f"results[{k}]: missing field 'bbox' (needed for bbox AP)")


def _load_results(coco: COCO, results: list[dict], iou_type: str, verbose: bool) -> COCO:
    if not results:
        # pycocotools' loadRes indexes results[0]; an empty detection set is simply a COCO with no annotations.
        dt = COCO()
        dt.dataset = {"images": list(coco.dataset["images"]), "categories": copy.deepcopy(coco.dataset["categories"]),
                      "annotations": []}
        with _quiet(verbose):
            dt.createIndex()
        return dt
    dets = []
    for r in results:
        d = dict(r)
        if iou_type == "segm":
            # With a bbox present, loadRes takes the box area as the detection's area; the mask area is right
            # for segm (it decides which area range an unmatched detection falls in).
            d.pop("bbox", None)
        elif "bbox" not in d:
            d["bbox"] = [float(v) for v in mask_utils.toBbox(d["segmentation"])]
        else:
            d.pop("segmentation", None)  # loadRes would otherwise keep a mask it does not need
        dets.append(d)
    with _quiet(verbose):
        return coco.loadRes(dets)


def _metric(v: float) -> float | None:
    # COCOeval uses -1 for "no ground truth in this range": report None rather than a fake number.
    return None if v < 0 or math.isnan(v) else round(float(v) * 100, 3)


def evaluate(
    gt: str | Path | COCO | dict,
    results: Sequence[dict],
    iou_types: Sequence[str] = IOU_TYPES,
    *,
    verbose: bool = False,
    per_category: bool = False,
) -> dict[str, dict]:
    """COCO AP for each IoU type: `{"segm": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, "bbox": {...}}`.

    Values are percent (0..100), None where the ground truth has no object of that size. With `per_category`,
    each dict also gets `"per_category": {class name: AP}`.
    """
    for t in iou_types:
        if t not in IOU_TYPES:
            raise ValueError(f"iou type {t!r} not supported; expected some of {IOU_TYPES}")
    coco = load_gt(gt, verbose)
    results = list(results)
    _check_results(coco, results, iou_types)
    out: dict[str, dict] = {}
    for t in iou_types:
        dt = _load_results(coco, results, t, verbose)
        ev = COCOeval(coco, dt, iouType=t)
        with _quiet(verbose):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics: dict = {name: _metric(ev.stats[k]) for k, name in enumerate(METRICS)}
        if per_category:
            names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
            prec = ev.eval["precision"]  # (iou thr, recall, category, area range, max dets)
            per = {}
            for k, cid in enumerate(ev.params.catIds):
                p = prec[:, :, k, 0, -1]
                p = p[p > -1]
                per[names[cid]] = round(float(p.mean()) * 100, 3) if p.size else None
            metrics["per_category"] = per
        out[t] = metrics
    return out


def format_table(metrics: dict[str, dict]) -> str:
    """An aligned text table of the six metrics for each IoU type in `metrics`."""
    lines = ["      " + "".join(f"{m:>8}" for m in METRICS)]
    for t, vals in metrics.items():
        cells = "".join(f"{'-' if vals.get(m) is None else format(vals[m], '.1f'):>8}" for m in METRICS)
        lines.append(f"{t:<6}{cells}")
    return "\n".join(lines)
