"""`boxseg eval --data DIR --labels FILE`: how good the masks of a `boxseg label` file are, against DIR's GT masks.

Labels and GT are paired by annotation id (`boxseg label` keeps ids, images and classes); every non-crowd GT
annotation the dataset reader keeps must be in the labels, on the same image with the same category. A label's
IoU is that of its mask with the GT mask (0 when it has no mask). Reported:
- `miou`: mean IoU of the valid labels (`boxseg_valid`, the masks training uses), overall and per GT size
  (COCO ranges by the GT annotation's `area`: small < 32², medium < 96², large otherwise), with their count;
  `miou_all` over every GT annotation (a label without a mask counts 0, a fallback mask as it is);
  `by_source` per `boxseg_source`;
- `segm`: COCO mask AP of every label that has a mask, scored by its `boxseg_quality` w;
- `spearman_w_iou`: Spearman's rank correlation of w and IoU over the valid labels (MQS's claim: w ranks masks by
  quality), None with fewer than two labels or a constant w or IoU;
- `curve`: for each cut t, the valid labels with w ≥ t: how many are kept, their fraction of all GT annotations,
  and their mean IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boxseg.data.coco import CocoDataset, load_json
from boxseg.data.errors import DataError
from boxseg.data.segmentation import segmentation_problem, segmentation_to_mask

SIZE_RANGES = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, float("inf"))}
DEFAULT_CUTS = tuple(round(0.05 * k, 2) for k in range(20))  # 0.00, 0.05, ..., 0.95


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the average ranks. None when undefined (n < 2 or a constant)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return None if den == 0.0 else float((rx * ry).sum() / den)


def size_of(area: float) -> str:
    for name, (lo, hi) in SIZE_RANGES.items():
        if lo <= area < hi:
            return name
    return "large"


def label_records(data: str | Path, labels: str | Path) -> list[dict[str, Any]]:
    """One record per GT annotation: id, image_id, category_id, gt_area, size, iou, w, valid, source, has_mask."""
    gt = CocoDataset(data, with_masks=True)
    labels = Path(labels)
    lab = load_json(labels)
    CocoDataset.from_data(lab, labels, with_masks=False, allow_outside_images=True)  # structure, ids, fields
    by_id = {a["id"]: a for a in lab["annotations"]}
    raw_gt = {a["id"]: a for a in load_json(gt.ann_file)["annotations"]}
    records = []
    for i in range(len(gt)):
        info = gt.image_info(i)
        h, w = info["height"], info["width"]
        ids = gt.annotation_ids(i)
        if not ids:
            continue
        masks = gt.load_masks(i)
        for k, aid in enumerate(ids):
            a = by_id.get(aid)
            g = raw_gt[aid]
            if a is None:
                raise DataError(f"{labels}: no label for annotation id={aid} of {gt.ann_file}; were these labels made "
                                "from this dataset?")
            if a["image_id"] != g["image_id"] or a["category_id"] != g["category_id"]:
                raise DataError(f"{labels}: annotation id={aid} is on image {a['image_id']} with category "
                                f"{a['category_id']}, but in {gt.ann_file} on image {g['image_id']} with category "
                                f"{g['category_id']}; were these labels made from this dataset?")
            seg = a.get("segmentation")
            if seg is not None:
                problem = segmentation_problem(seg, h, w)
                if problem:
                    raise DataError(f"{labels}: annotation id={aid}: field 'segmentation' {problem}")
                pred = segmentation_to_mask(seg, h, w)
                inter = float(np.logical_and(pred, masks[k]).sum())
                union = float(np.logical_or(pred, masks[k]).sum())
                iou = inter / union if union > 0 else 0.0
            else:
                iou = 0.0
            gt_area = float(g["area"]) if "area" in g else float(masks[k].sum())
            records.append({
                "id": aid, "image_id": a["image_id"], "category_id": a["category_id"], "gt_area": gt_area,
                "size": size_of(gt_area), "iou": iou, "w": float(a.get("boxseg_quality", 1.0)),
                "valid": bool(a.get("boxseg_valid", seg is not None)) and seg is not None,
                "source": a.get("boxseg_source", "unknown"), "has_mask": seg is not None, "segmentation": seg,
                "bbox": a["bbox"],
            })
    if not records:
        raise DataError(f"{gt.ann_file}: no non-crowd annotations to compare labels with")
    return records


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(records: list[dict[str, Any]], cuts: Sequence[float] = DEFAULT_CUTS) -> dict[str, Any]:
    """The label metrics of `label_records` output (everything but mask AP)."""
    valid = [r for r in records if r["valid"]]
    n = len(records)
    by_size = {}
    for name in SIZE_RANGES:
        sel = [r["iou"] for r in valid if r["size"] == name]
        by_size[name] = {"miou": _mean(sel), "count": len(sel),
                         "gt_count": sum(1 for r in records if r["size"] == name)}
    by_source: dict[str, dict[str, Any]] = {}
    for r in records:
        by_source.setdefault(r["source"], []).append(r["iou"])  # type: ignore[arg-type]
    by_source = {k: {"miou": _mean(v), "count": len(v)} for k, v in sorted(by_source.items())}  # type: ignore
    curve = []
    for t in cuts:
        kept = [r["iou"] for r in valid if r["w"] >= t]
        curve.append({"min_quality": float(t), "kept": len(kept), "kept_fraction": len(kept) / n,
                      "miou": _mean(kept)})
    return {
        "annotations": n, "valid": len(valid), "valid_fraction": len(valid) / n,
        "miou": _mean([r["iou"] for r in valid]), "miou_all": _mean([r["iou"] for r in records]),
        "by_size": by_size, "by_source": by_source,
        "spearman_w_iou": spearman([r["w"] for r in valid], [r["iou"] for r in valid]),
        "curve": curve,
    }


def evaluate_labels(data: str | Path, labels: str | Path, cuts: Sequence[float] = DEFAULT_CUTS,
                    mask_ap: bool = True) -> dict[str, Any]:
    """`summarize` plus `segm`: COCO mask AP of the labels with a mask, each scored by its w."""
    from boxseg.data.coco import resolve_paths
    from boxseg.eval.coco_eval import evaluate

    records = label_records(data, labels)
    out = {"data": str(data), "labels": str(labels), **summarize(records, cuts)}
    if mask_ap:
        results = [{"image_id": r["image_id"], "category_id": r["category_id"], "segmentation": r["segmentation"],
                    "bbox": [float(v) for v in r["bbox"]], "score": r["w"]} for r in records if r["has_mask"]]
        out["segm"] = evaluate(resolve_paths(data)[0], results, ("segm",))["segm"]
    return out


def write_label_report(result: dict[str, Any], out_dir: str | Path, name: str = "label_eval") -> dict[str, str]:
    """`name.json` (the whole result) and `name.png` (mean IoU and kept fraction against the w cut)."""
    import json

    from boxseg.bench.report import plot_rows
    from boxseg.tempfiles import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    write_atomic(json_path, json.dumps(result, indent=1) + "\n")
    rows = [{"w >=": f"{c['min_quality']:.2f}", "mean IoU": c["miou"], "kept fraction": c["kept_fraction"]}
            for c in result["curve"]]
    plot_rows(rows, png_path, [
        {"kind": "line", "x": "w >=", "y": "mean IoU", "title": "mean IoU of the kept labels", "xlabel": "w cut"},
        {"kind": "line", "x": "w >=", "y": "kept fraction", "title": "fraction of GT boxes kept", "xlabel": "w cut"},
    ])
    return {"json": str(json_path), "png": str(png_path)}


def format_label_report(result: dict[str, Any], cuts_shown: Sequence[float] = (0.5, 0.7, 0.9)) -> str:
    def f(v: float | None, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"labels: {result['labels']}  data: {result['data']}",
             f"valid labels: {result['valid']} of {result['annotations']} ({f(result['valid_fraction'], '.1%')})",
             f"mean IoU with GT: valid {f(result['miou'])}, all {f(result['miou_all'])} (no mask = 0)",
             "  by size: " + ", ".join(f"{k} {f(v['miou'])} (n={v['count']})" for k, v in result["by_size"].items()),
             "  by source: " + ", ".join(f"{k} {f(v['miou'])} (n={v['count']})"
                                         for k, v in result["by_source"].items()),
             f"Spearman(w, IoU): {f(result['spearman_w_iou'])}"]
    if "segm" in result:
        s = result["segm"]
        lines.append(f"mask AP scored by w: AP {f(s['AP'], '.1f')}, AP50 {f(s['AP50'], '.1f')}, "
                     f"AP75 {f(s['AP75'], '.1f')}")
    shown = [c for c in result["curve"] if any(abs(c["min_quality"] - t) < 1e-9 for t in cuts_shown)]
    for c in shown or result["curve"]:
        lines.append(f"  w >= {c['min_quality']:.2f}: kept {c['kept']} ({c['kept_fraction']:.1%}), "
                     f"mean IoU {f(c['miou'])}")
    return "\n".join(lines)
