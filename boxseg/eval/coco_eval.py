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

from boxseg.data.coco import CocoDataset, load_json
from boxseg.data.errors import DataError
from boxseg.data.segmentation import segmentation_problem

METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES: tuple[str, ...] = ("segm", "bbox")


def _quiet(verbose: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: str | Path | COCO | dict, verbose: bool = False, *, with_masks: bool = True) -> COCO:
    """A pycocotools COCO for a JSON path (or dataset folder), a COCO dict, or an existing COCO (returned as is).

    Paths and dicts go through the dataset reader (`CocoDataset`) first, so a bad file is a `DataError` naming
    the file, annotation and field instead of a hang or a crash inside pycocotools. `with_masks=False` (box AP
    only) does not require segmentations. Missing `area` (needed for APs/APm/APl) is filled from the mask, or the
    box when there is no mask; missing `iscrowd` becomes 0.
    """
    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if path.is_dir():
            path = path / "annotations.json"
        data = load_json(path)
        source: str | Path = path
    else:
        data = copy.deepcopy(gt)
        source = "ground truth"
    # Evaluation opens no image file, so file names are not confined here (the CLI's own reader checks them).
    CocoDataset.from_data(data, source, with_masks=with_masks, allow_outside_images=True)
    if with_masks:
        # The reader lets an invalid `boxseg label` label go without a mask (a training input); mask AP needs one.
        bare = next((a for a in data["annotations"] if "segmentation" not in a), None)
        if bare is not None:
            raise DataError(f"{source}: annotation id={bare['id']} has no 'segmentation' (a `boxseg label` label "
                            "marked invalid); mask AP needs a mask for every ground-truth annotation. Evaluate "
                            "labels against their dataset with `boxseg eval --data DIR --labels FILE`")
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for a in data["annotations"]:
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            seg = a.get("segmentation")
            if seg and with_masks:  # validated by the reader above
                h, w = sizes[a["image_id"]]
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


def scored_instances(coco: COCO) -> int:
    """How many ground-truth instances COCOeval scores: every annotation except crowd regions (those are
    ignored, matched or not). Degenerate or clipped boxes still count: evaluation uses the file as it is."""
    return sum(1 for a in coco.dataset["annotations"] if not a.get("iscrowd", 0))


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
        if "segmentation" in r:  # a predicted mask reaches pycocotools too
            img = coco.imgs[r["image_id"]]
            # Structure and size only: predictors encode their RLE with pycocotools' rules, and decoding every
            # detection's counts in Python would cost more than the evaluation at COCO scale.
            problem = segmentation_problem(r["segmentation"], img["height"], img["width"], decode_counts=False)
            if problem:
                raise ValueError(f"results[{k}] (image_id {r['image_id']}): field 'segmentation' {problem}")
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
    coco = load_gt(gt, verbose, with_masks="segm" in iou_types)
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
