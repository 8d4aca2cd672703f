"""Checks that an exported graph computes what the PyTorch student computes.

- `check_onnx_file`: onnx.checker (full check, with shape inference) on the file.
- `verify_onnx`: ONNX Runtime vs `CondInst.inference` (eager PyTorch) on the same images at several batch sizes and
  input sizes. Detections are matched per image (same class, scores within tolerance, best box IoU), so a swap of
  two near-tied scores is not a failure; every detection must find its partner, except a borderline one.
  Criteria (TOLERANCES): boxes within 1e-3 relative (|a-b| <= 1e-3 * max(|b|, 1 px)), scores within 1e-4 absolute,
  per-instance mask IoU >= 0.99 (masks thresholded at the model's mask threshold).
  Borderline: a detection whose score is within `borderline_tolerance` of the score threshold (or, where the other
  side filled all D slots, of that side's last kept score) may be missing on the other side: the other model
  rounded it to just below the cut. It is reported (`borderline`), never a failure. The
  tolerance is a multiple of the worst score error of the matched pairs, so it follows the rounding actually seen
  between the two backends on this machine instead of a fixed guess.
- `mask_ap_equality`: the full evaluation pipeline (letterbox, model, paste masks to the original image, COCO
  eval) once with PyTorch and once with the graph; mask AP must agree within 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from boxseg.export.errors import ExportError
from boxseg.export.graph import OUTPUT_NAMES
from boxseg.export.images import letterbox, letterbox_size


@dataclass(frozen=True)
class Tolerances:
    box_rel: float = 1e-3
    score_abs: float = 1e-4
    mask_iou: float = 0.99
    ap_delta: float = 0.1
    # None: boxes must agree within box_rel. A number: a pair matches only with box IoU >= box_iou, and box IoU
    # (>= box_iou_judged) is the box criterion instead of box_rel (reduced precision moves box edges by more than a
    # rounding).
    box_iou: float | None = None
    box_iou_judged: float = 0.0
    # Reduced precision. quantile q: box and mask IoU are judged at their q-quantile over the matched pairs (and the
    # borderline band uses the (1-q)-quantile score error) instead of the worst pair; 0 = the worst pair.
    quantile: float = 0.0
    # Detections scoring below min_score need no counterpart (int8 reorders the low-score near-duplicates).
    min_score: float = 0.0
    # Share of the compared detections that may lack a counterpart: a near-duplicate whose IoU with a stronger box
    # sits at the NMS threshold is kept on one side and suppressed on the other, whatever its score.
    unmatched_share: float = 0.0

    def describe(self) -> str:
        box = (f"boxes within {self.box_rel:g} relative" if self.box_iou is None else
               f"pairs by box IoU >= {self.box_iou}" + (f", box IoU >= {self.box_iou_judged}"
                                                       if self.box_iou_judged > self.box_iou else ""))
        at = "" if self.quantile == 0 else f" for {100 - 100 * self.quantile:g}% of pairs"
        text = f"{box}, scores within {self.score_abs:g}, mask IoU >= {self.mask_iou}{at}"
        if self.min_score:
            text += f", detections scoring >= {self.min_score:g}"
        if self.unmatched_share:
            text += f", up to {100 * self.unmatched_share:g}% without counterpart (NMS ties)"
        return text


TOLERANCES = Tolerances()
# Reduced-precision artefacts against the fp32 PyTorch model, measured on the EfficientNet-Lite0 student (trained
# at 192 px on the synthetic split) with the held-out synthetic scenes at 640x640, 480x320 and 320x416:
# fp16: matched score error <= 1.2e-3, box IoU >= 0.968, 5% mask IoU quantile >= 0.99 (single tiny masks down to
#   0); ~2% of detections flip at the NMS IoU threshold (scores 0.1-0.57).
# int8 (detections scoring >= 0.3): 95% score error quantile <= 0.14, worst 0.32; 5% box IoU quantile >= 0.67;
#   5% mask IoU quantile >= 0.69 (at 640, 3x the model's training size; 0.83-0.89 at 480x320).
# The limits leave room over those, and a broken conversion (a wrong scale, a swapped channel) still fails: it
# moves most boxes below IoU 0.5 and most scores by more than 0.35.
PRECISION_TOLERANCES: dict[str, Tolerances] = {
    "fp32": TOLERANCES,
    "fp16": Tolerances(box_rel=1e-2, score_abs=1e-2, mask_iou=0.9, ap_delta=0.5, box_iou=0.9, box_iou_judged=0.95,
                       quantile=0.05, unmatched_share=0.05),
    "int8": Tolerances(box_rel=5e-2, score_abs=0.35, mask_iou=0.6, ap_delta=1.0, box_iou=0.5, box_iou_judged=0.6,
                       quantile=0.05, min_score=0.3, unmatched_share=0.05),
}


def tolerances_for(precision: str) -> Tolerances:
    """The --verify tolerances for an artefact of `precision` ("fp32", "fp16" or "int8")."""
    try:
        return PRECISION_TOLERANCES[precision]
    except KeyError:
        raise ExportError(f"unknown precision {precision!r}; expected one of {sorted(PRECISION_TOLERANCES)}") from None

# A missing detection is borderline when its score is within this many times the worst matched-pair score error of
# the threshold: its own error is unseen, but it comes from the same arithmetic as the matched ones, so a few times
# their worst error bounds it with room to spare. Matched errors are at most Tolerances.score_abs, which caps this.
BORDERLINE_ERROR_MULTIPLE = 4.0
# Floor, in float32 ulps of the threshold: when every matched pair agrees exactly (or none exists) a score can still
# differ by a few roundings of the final sigmoid/sqrt/compare, which is all the floor allows.
BORDERLINE_FLOOR_ULPS = 16
Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def check_onnx_file(path: str | Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{str(path)!r} fails onnx.checker: {exc}") from exc


def ort_runner(path: str | Path, threads: int | None = None) -> Runner:
    """A function images -> outputs by name, backed by an ONNX Runtime CPU session on `path`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})))

    return run


def torch_runner(model, max_dets: int | None = None) -> Runner:
    """The reference: eager `CondInst.inference` on CPU."""
    import torch

    model = model.eval()

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            det = model.inference(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
                                  max_dets=max_dets)
        return {name: getattr(det, name).cpu().numpy() for name in OUTPUT_NAMES}

    return run


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(4,) vs (n, 4) xyxy."""
    lt = np.maximum(a[:2], b[:, :2])
    rb = np.minimum(a[2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    def area(x: np.ndarray) -> np.ndarray:
        return np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)

    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), (np.abs(b - a).max(1) == 0).astype(float))


def borderline_tolerance(matched_score_errors: Sequence[float] | np.ndarray, score_threshold: float) -> float:
    """How close to `score_threshold` a detection's score must be for its absence on the other side to be allowed:
    BORDERLINE_ERROR_MULTIPLE x the worst |score difference| over matched pairs, at least BORDERLINE_FLOOR_ULPS
    float32 ulps of the threshold."""
    errors = np.abs(np.asarray(matched_score_errors, dtype=np.float64))
    observed = float(errors.max()) if errors.size else 0.0
    floor = BORDERLINE_FLOOR_ULPS * float(np.spacing(np.float32(abs(score_threshold))))
    return max(BORDERLINE_ERROR_MULTIPLE * observed, floor)


def compare_detections(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerances = TOLERANCES,
                       mask_threshold: float = 0.5, score_threshold: float | None = None) -> dict[str, Any]:
    """Compare two sets of graph outputs (batched, padded). Returns metrics, `failures`, `passed` and `borderline`.

    With `score_threshold` (the one both models apply), an unmatched detection whose score is within
    `borderline_tolerance` of it is listed in `borderline` instead of failing; without it every detection must
    match. The same holds at the other cut the outputs show: when the other side filled all D slots, a detection
    within the tolerance of that side's lowest kept score may have ranked just below it there.
    """
    failures: list[str] = []
    for name in OUTPUT_NAMES:
        if ref[name].shape != got[name].shape:
            failures.append(f"{name}: shape {got[name].shape}, expected {ref[name].shape}")
    if failures:
        return {"passed": False, "failures": failures, "borderline": []}
    worst = {"box_rel_err": 0.0, "box_abs_err": 0.0, "score_abs_err": 0.0, "mask_prob_abs_err": 0.0,
             "min_mask_iou": 1.0, "min_box_iou": 1.0}
    matched = 0
    score_errors: list[float] = []
    box_ious: list[float] = []
    mask_ious: list[float] = []
    unmatched: list[tuple[int, str, int, int, float]] = []  # (image, side, index, class, score)
    counts: list[tuple[int, int]] = []
    for b in range(ref["scores"].shape[0]):
        n_ref, n_got = int(ref["num_dets"][b]), int(got["num_dets"][b])
        counts.append((n_ref, n_got))
        free = np.ones(n_got, dtype=bool)
        for i in range(n_ref):
            cands = np.flatnonzero(free & (got["classes"][b, :n_got] == ref["classes"][b, i])
                                   & (np.abs(got["scores"][b, :n_got] - ref["scores"][b, i]) <= tol.score_abs))
            ious = _box_iou(ref["boxes"][b, i], got["boxes"][b, cands]) if cands.size else np.zeros(0)
            if tol.box_iou is not None:
                cands, ious = cands[ious >= tol.box_iou], ious[ious >= tol.box_iou]
            if cands.size == 0:
                unmatched.append((b, "reference", i, int(ref["classes"][b, i]), float(ref["scores"][b, i])))
                continue
            j = cands[np.argmax(ious)]
            free[j] = False
            if ref["scores"][b, i] < tol.min_score:
                continue  # a counterpart found, but below the compared range: its errors are not judged
            box_ious.append(float(ious.max()))
            matched += 1
            rb, gb = ref["boxes"][b, i], got["boxes"][b, j]
            worst["box_abs_err"] = max(worst["box_abs_err"], float(np.abs(gb - rb).max()))
            worst["box_rel_err"] = max(worst["box_rel_err"],
                                       float((np.abs(gb - rb) / np.maximum(np.abs(rb), 1.0)).max()))
            score_errors.append(float(abs(got["scores"][b, j] - ref["scores"][b, i])))
            rm, gm = ref["masks"][b, i], got["masks"][b, j]
            worst["mask_prob_abs_err"] = max(worst["mask_prob_abs_err"], float(np.abs(gm - rm).max()))
            mask_ious.append(_mask_iou(rm > mask_threshold, gm > mask_threshold))
        unmatched += [(b, "graph", int(j), int(got["classes"][b, j]), float(got["scores"][b, j]))
                      for j in np.flatnonzero(free)]
        # padding rows of the graph under test must be padding
        pad = slice(n_got, None)
        if (got["scores"][b, pad] != 0).any() or (got["classes"][b, pad] != -1).any():
            failures.append(f"image {b}: padding rows after {n_got} are not (score 0, class -1)")
    worst["score_abs_err"] = max(score_errors, default=0.0)
    q = tol.quantile
    worst["min_box_iou"] = float(np.quantile(box_ious, q)) if box_ious else 1.0
    worst["min_mask_iou"] = float(np.quantile(mask_ious, q)) if mask_ious else 1.0

    # Decided after all pairs are matched: the tolerance comes from their score errors.
    errors = [float(np.quantile(score_errors, 1 - q))] if score_errors and q else score_errors
    margin = None if score_threshold is None else borderline_tolerance(errors, score_threshold)
    if score_threshold is not None and tol.min_score > score_threshold:
        score_threshold = tol.min_score  # the compared range starts here (see Tolerances.min_score)
    compared = sum(int((ref["scores"][b, :n] >= (tol.min_score or -1)).sum()) for b, (n, _) in enumerate(counts))
    allowed_unmatched = int(tol.unmatched_share * compared)
    borderline: list[dict[str, Any]] = []
    unexplained: set[int] = set()
    slots = ref["scores"].shape[1]
    for b, side, idx, cls, score in unmatched:
        if score < tol.min_score:
            continue
        other, n_other = (got, counts[b][1]) if side == "reference" else (ref, counts[b][0])
        at_threshold = margin is not None and abs(score - score_threshold) <= margin
        at_full_cut = (margin is not None and n_other == slots and slots > 0
                       and score <= float(other["scores"][b, :n_other].min()) + margin)
        if at_threshold or at_full_cut:
            borderline.append({"image": b, "side": side, "index": idx, "class": cls, "score": score,
                               "above_threshold": score - score_threshold,
                               "cut": "score threshold" if at_threshold else f"last of {slots} slots"})
            continue
        if allowed_unmatched > 0:
            allowed_unmatched -= 1
            borderline.append({"image": b, "side": side, "index": idx, "class": cls, "score": score,
                               "above_threshold": score - (score_threshold or 0.0), "cut": "NMS tie"})
            continue
        unexplained.add(b)
        where = "" if side == "reference" else " of the graph"
        failures.append(f"image {b}: detection {idx}{where} (class {cls}, score {score:.6f}) has no counterpart")
    for b in sorted(unexplained):
        n_ref, n_got = counts[b]
        if n_ref != n_got:
            failures.append(f"image {b}: num_dets {n_got}, expected {n_ref}")
    if tol.box_iou is None and worst["box_rel_err"] > tol.box_rel:
        failures.append(f"box relative error {worst['box_rel_err']:.3g} > {tol.box_rel}")
    if worst["score_abs_err"] > tol.score_abs:
        failures.append(f"score error {worst['score_abs_err']:.3g} > {tol.score_abs}")
    at = "" if q == 0 else f" ({100 * q:g}% quantile)"
    if tol.min_score and compared == 0:
        failures.append(f"nothing to compare: no detection of the reference scores >= {tol.min_score:g}")
    if worst["min_mask_iou"] < tol.mask_iou:
        failures.append(f"mask IoU {worst['min_mask_iou']:.4f} < {tol.mask_iou}{at}")
    if tol.box_iou is not None and worst["min_box_iou"] < tol.box_iou_judged:
        failures.append(f"box IoU {worst['min_box_iou']:.4f} < {tol.box_iou_judged}{at}")
    return {"passed": not failures, "failures": failures[:20], "matched": matched, **worst,
            "score_threshold": score_threshold, "borderline_tolerance": margin, "borderline": borderline}


def sample_images(count: int = 4, size: tuple[int, int] = (320, 416), folder: str | Path | None = None,
                  seed: int = 12345) -> list[np.ndarray]:
    """uint8 HWC RGB images: the first `count` of `folder`, or procedural synthetic scenes (a seed the training
    data never uses, so they are held out)."""
    if folder is not None:
        from boxseg.export.images import list_images, read_rgb

        return [read_rgb(p) for p in list_images(folder, limit=count)]
    from boxseg.data.synth import render_image

    return [render_image(i, seed=seed, size=size).image for i in range(count)]


def verify_onnx(model, onnx_path: str | Path, *, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                batches: Sequence[int] = (1, 4), max_dets: int | None = None, tol: Tolerances = TOLERANCES,
                runner: Runner | None = None, precision: str = "fp32") -> dict[str, Any]:
    """ONNX Runtime (or `runner`, e.g. a TensorRT engine) vs PyTorch for every (batch, size) case; `precision`
    names the artefact's precision (`tol` should be `tolerances_for(precision)`), reported with the criteria."""
    check_onnx_file(onnx_path)
    got_run = runner or ort_runner(onnx_path)
    ref_run = torch_runner(model, max_dets)
    cases = []
    for size in sizes:
        prepared = [letterbox(img, size)[0] for img in images]
        for batch in batches:
            x = np.stack([prepared[i % len(prepared)] for i in range(batch)])
            report = compare_detections(ref_run(x), got_run(x), tol, float(model.cfg.mask_thresh),
                                        float(model.cfg.score_thresh))
            cases.append({"batch": batch, "size": list(size), **report})
    keys = ("box_abs_err", "box_rel_err", "score_abs_err", "mask_prob_abs_err")
    summary = {k: max((c.get(k, float("inf")) for c in cases), default=0.0) for k in keys}
    summary["min_mask_iou"] = min((c.get("min_mask_iou", 0.0) for c in cases), default=1.0)
    summary["min_box_iou"] = min((c.get("min_box_iou", 0.0) for c in cases), default=1.0)
    summary["matched"] = sum(c.get("matched", 0) for c in cases)
    summary["precision"], summary["criteria"] = precision, tol.describe()
    summary["borderline"] = [{"batch": c["batch"], "size": c["size"], **d} for c in cases for d in c["borderline"]]
    return {"passed": all(c["passed"] for c in cases), "cases": cases, **summary}


def _detections_to_coco(out: dict[str, np.ndarray], b: int, image_id: int, scale: float, resized: tuple[int, int],
                        orig: tuple[int, int], cat_ids: Sequence[int], mask_threshold: float) -> list[dict]:
    import torch

    from boxseg.eval.results import instances_to_coco
    from boxseg.model.postprocess import paste_masks

    n = int(out["num_dets"][b])
    boxes = out["boxes"][b, :n]
    masks = paste_masks(torch.from_numpy(out["masks"][b, :n]), torch.from_numpy(boxes), orig, input_size=resized,
                        threshold=mask_threshold).numpy()
    boxes_orig = boxes / scale
    boxes_orig[:, 0::2] = boxes_orig[:, 0::2].clip(0, orig[1])
    boxes_orig[:, 1::2] = boxes_orig[:, 1::2].clip(0, orig[0])
    return instances_to_coco(image_id, boxes_orig, out["scores"][b, :n], out["classes"][b, :n], masks, cat_ids)


def mask_ap_equality(model, onnx_path: str | Path, dataset_dir: str | Path, *, imgsz: tuple[int, int] = (320, 320),
                     max_images: int | None = None, runner: Runner | None = None, tol: Tolerances = TOLERANCES
                     ) -> dict[str, Any]:
    """COCO mask and box AP of PyTorch and of the graph on a COCO-format folder; `passed` when mask AP agrees.

    `matching` is `compare_detections` per image (same borderline rule as `verify_onnx`), so a difference in the
    detection counts can be told apart from a borderline detection that one side dropped."""
    from boxseg.data.coco import CocoDataset
    from boxseg.eval.coco_eval import evaluate

    ds = CocoDataset(dataset_dir)
    got_run = runner or ort_runner(onnx_path)
    ref_run = torch_runner(model)
    results: dict[str, list[dict]] = {"torch": [], "onnx": []}
    count = len(ds) if max_images is None else min(len(ds), max_images)
    matching: dict[str, Any] = {"passed": True, "failures": [], "borderline": []}
    mask_thr, score_thr = float(model.cfg.mask_thresh), float(model.cfg.score_thresh)
    for i in range(count):
        item = ds[i]
        img = item["image"]
        x, scale = letterbox(img, imgsz, fill_canvas=False)
        resized = letterbox_size(img.shape[0], img.shape[1], imgsz)
        outs = {}
        for key, run in (("torch", ref_run), ("onnx", got_run)):
            outs[key] = out = run(x[None])
            results[key] += _detections_to_coco(out, 0, item["image_id"], scale, resized, img.shape[:2], ds.cat_ids,
                                                mask_thr)
        cmp = compare_detections(outs["torch"], outs["onnx"], tol, mask_thr, score_thr)
        matching["passed"] &= cmp["passed"]
        matching["failures"] += [f"image id {item['image_id']}: {f}" for f in cmp["failures"]]
        matching["borderline"] += [{**d, "image": item["image_id"]} for d in cmp["borderline"]]
    metrics = {}
    for key, res in results.items():
        ev = evaluate(ds.ann_file, res, iou_types=("segm", "bbox")) if res else None
        metrics[key] = {"segm_AP": ev["segm"]["AP"] if ev else 0.0, "bbox_AP": ev["bbox"]["AP"] if ev else 0.0,
                        "detections": len(res)}
    delta = abs(metrics["torch"]["segm_AP"] - metrics["onnx"]["segm_AP"])
    return {"passed": delta <= tol.ap_delta, "images": count, "segm_AP_delta": delta,
            "bbox_AP_delta": abs(metrics["torch"]["bbox_AP"] - metrics["onnx"]["bbox_AP"]), **metrics,
            "matching": {**matching, "failures": matching["failures"][:20]}}
