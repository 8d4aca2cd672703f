"""`boxseg label`: instance masks and quality scores for the boxes of a COCO dataset (issue 14).

For every GT box the checkpoint's EMA teacher (its `teacher` entry; the student when there is none) labels the
teacher view of the image (`teacher.input`, docs/method.md "Views") through the Quality-Aware Module, the same
code teacher-student training labels with (`boxseg.train.teacher_student.label_teacher_views`), or through
BoxTeacher's BPMA (`labeller="bpma"`). `ellipse` and `box` need no checkpoint: the ellipse inscribed in the box,
or the filled box, every label valid with w = 1 (the trivial references labels are measured against).

Test-time augmentation (`tta`) runs QAM (BQR, QMF, MQS) once per view: `flip` adds the horizontally flipped
teacher view, `flip+scales` the views at 0.75x, 1x and 1.25x the teacher size, each with and without the flip.
Each view's fused soft mask (BoxSeg Eq. 2) is resampled to original pixels; a GT's mask is the mean of those
soft masks over the views where QAM found it valid, and its w the mean of those views' MQS scores (Eq. 5). A GT
is valid when at least one view is. With `tta=none` mask and w are exactly QAM's.

Then, in original pixels: the mask is cut to the GT box, BoxCaseg's clean-up runs when asked
(`qam.overlap_resolution`, `qam.box_agreement`; `boxseg.train.pseudo.qam.clean_up`), the soft mask is binarised
at `qam.tau_pixel`, and a label below `min_quality` or with an empty mask becomes invalid. An invalid label keeps
its box and gets no mask, or the `fallback` shape (still `boxseg_valid: false`, so training ignores it).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from boxseg.train.checkpoint import CheckpointError, load_model_weights
from boxseg.train.data import pad_to, resize_image, to_chw_float
from boxseg.train.geometry import ViewGeometry, map_masks, resize_shortest_edge
from boxseg.train.pseudo.qam import clean_up

from boxseg.contract import MASK_STRIDE
from boxseg.data.coco import IMAGES_DIR, CocoDataset, load_json
from boxseg.eval.baselines import box_mask
from boxseg.eval.results import encode_masks
from boxseg.label.store import (
    ANNOTATIONS,
    STATE_DIR,
    LabelError,
    PartialResults,
    dumps,
    file_sha256,
    fingerprint_differences,
    remove_leftovers,
)
from boxseg.ops import box_masks
from boxseg.tempfiles import write_atomic

LABELLERS = ("qam", "bpma", "ellipse", "box")
MODEL_LABELLERS = ("qam", "bpma")
TTA_MODES = ("none", "flip", "flip+scales")
TTA_SCALES = (0.75, 1.0, 1.25)  # times teacher.input (short and max)
FALLBACKS = ("none", "ellipse", "box")
OVERLAPS = {"none": "none", "smaller-wins": "smaller_wins"}
_SHAPES = {"ellipse": "ellipse", "box": "box-fill"}


@dataclass
class LabelOptions:
    labeller: str = "qam"
    tta: str = "none"
    fallback: str = "none"
    min_quality: float = 0.0
    overlap: str | None = None        # none | smaller-wins; None: the checkpoint's qam.overlap_resolution
    box_agreement: str | None = None  # off | gate:T | gate | multiply; None: the checkpoint's qam.box_agreement
    device: str = "cpu"

    def validate(self) -> None:
        for name, allowed in (("labeller", LABELLERS), ("tta", TTA_MODES), ("fallback", FALLBACKS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected one of {list(allowed)}")
        if self.overlap is not None and self.overlap not in OVERLAPS:
            raise ValueError(f"overlap: got {self.overlap!r}, expected one of {list(OVERLAPS)}")
        if not 0.0 <= float(self.min_quality) <= 1.0:
            raise ValueError(f"min_quality: got {self.min_quality!r}, expected a number in [0, 1]")
        if self.box_agreement is not None:
            parse_box_agreement(self.box_agreement)
        if self.labeller not in MODEL_LABELLERS and self.tta != "none":
            raise ValueError(f"tta={self.tta!r} needs a model labeller (qam or bpma), not {self.labeller!r}")


def parse_box_agreement(text: str) -> tuple[str, float | None]:
    """'off' | 'multiply' | 'gate' | 'gate:T' -> (qam.box_agreement, threshold or None for the config's)."""
    if text in ("off", "multiply", "gate"):
        return text, None
    if text.startswith("gate:"):
        try:
            t = float(text[5:])
        except ValueError:
            t = float("nan")
        if 0.0 <= t <= 1.0:
            return "gate", t
    raise ValueError(f"box agreement {text!r}: expected off, multiply, gate or gate:T with T in [0, 1] "
                     "(e.g. gate:0.8)")


def tta_views(mode: str) -> list[tuple[float, bool]]:
    """(scale, flip) of each teacher view that `mode` labels with."""
    scales = TTA_SCALES if mode == "flip+scales" else (1.0,)
    flips = (False, True) if mode in ("flip", "flip+scales") else (False,)
    return [(s, f) for s in scales for f in flips]


# ---------------------------------------------------------------------------------------------- the labeller


class Labeller:
    """Labels one image's GT boxes: `label_image(image, boxes, classes) -> (masks, quality, valid)`."""

    def __init__(self, checkpoint: str | Path | None, options: LabelOptions) -> None:
        options.validate()
        self.options = options
        self.device = torch.device(options.device)
        self.model = None
        self.model_source = None
        self.checkpoint_info: dict[str, Any] = {}
        self.class_names: list[str] | None = None
        if options.labeller in MODEL_LABELLERS:
            if checkpoint is None:
                raise ValueError(f"labeller {options.labeller!r} needs --checkpoint (ellipse and box do not)")
            self._load(checkpoint)
        else:
            from boxseg.train.pseudo.config import QAMConfig

            self.qam_cfg = QAMConfig()
        overlap = OVERLAPS[options.overlap] if options.overlap else self.qam_cfg.overlap_resolution
        agreement, thresh = (parse_box_agreement(options.box_agreement) if options.box_agreement
                             else (self.qam_cfg.box_agreement, None))
        # Clean-up runs once, on the final masks in original pixels; the per-view QAM runs without it.
        self.cleanup_cfg = dataclasses.replace(
            self.qam_cfg, overlap_resolution=overlap, box_agreement=agreement,
            box_agreement_thresh=self.qam_cfg.box_agreement_thresh if thresh is None else thresh)
        self.view_qam_cfg = dataclasses.replace(self.qam_cfg, overlap_resolution="none", box_agreement="off")
        self.tau_pixel = float(self.qam_cfg.tau_pixel)

    def _load(self, checkpoint: str | Path) -> None:
        from boxseg.eval.predict import checkpoint_model

        model, cfg, ckpt = checkpoint_model(checkpoint, "cpu")
        if ckpt.get("teacher") is not None:
            load_model_weights(model, ckpt["teacher"], checkpoint, what="teacher")
            self.model_source = "teacher"
        else:
            self.model_source = "student"
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.qam_cfg = cfg.qam
        self.bpma_cfg = cfg.bpma
        self.teacher_input = (int(cfg.teacher.input.short), int(cfg.teacher.input.max))
        self.size_divisor = int(cfg.input.size_divisor)
        self.class_names = list(ckpt["class_names"])
        self.checkpoint_info = {"checkpoint": str(checkpoint), "iteration": int(ckpt["iteration"]),
                                "model": self.model_source, "preset": cfg.preset,
                                "teacher_input": list(self.teacher_input)}

    def check_classes(self, dataset: CocoDataset) -> None:
        if self.class_names is not None and list(dataset.class_names) != self.class_names:
            raise CheckpointError(f"the checkpoint was trained on classes {self.class_names}, but "
                                  f"{dataset.ann_file} has {list(dataset.class_names)}; QAM scores each box with "
                                  "its class, so the category lists must match (same names, same id order)")

    @torch.no_grad()
    def label_image(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (H,W,3), xyxy boxes (G,4) in original pixels, class indices (G,) -> bool masks (G,H,W),
        quality w (G,) float, valid (G,) bool."""
        h, w = image.shape[:2]
        g = len(boxes)
        if g == 0:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float64), np.zeros(0, bool)
        boxes_t = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4), device=self.device)
        if self.model is None:
            kind = _SHAPES[self.options.labeller]
            soft = torch.from_numpy(np.stack([box_mask(_xywh(b), h, w, kind) for b in boxes])).float()
            soft = soft.to(self.device)
            weights = torch.ones(g, device=self.device)
            valid = torch.ones(g, dtype=torch.bool, device=self.device)
        else:
            classes_t = torch.as_tensor(np.asarray(classes, np.int64).reshape(-1), device=self.device)
            soft, weights, valid = self._model_labels(image, boxes_t, classes_t)
        soft = soft * box_masks(boxes_t, h, w)  # labels lie inside their box, as in QAM (docs/method.md)
        soft, weights, valid = clean_up(soft, weights, valid, boxes_t, self.cleanup_cfg, mask_stride=1)
        masks = soft > self.tau_pixel
        valid = valid & masks.flatten(1).any(1)
        return masks.cpu().numpy(), weights.double().cpu().numpy(), valid.cpu().numpy()

    def _model_labels(self, image: np.ndarray, boxes: torch.Tensor, classes: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The TTA mean over views of QAM's (or BPMA's) soft masks in original pixels and of their w."""
        from boxseg.train.teacher_student import label_teacher_views

        h, w = image.shape[:2]
        g = boxes.shape[0]
        img = to_chw_float(image).to(self.device)
        original = ViewGeometry((h, w), (h, w))
        mask_sum = torch.zeros(g, h, w, device=self.device)
        w_sum = torch.zeros(g, device=self.device)
        n_valid = torch.zeros(g, device=self.device)
        views = tta_views(self.options.tta)
        for scale in dict.fromkeys(s for s, _ in views):
            short = max(1, round(self.teacher_input[0] * scale))
            size = resize_shortest_edge((h, w), short, max(short, round(self.teacher_input[1] * scale)))
            resized = resize_image(img, size)
            geoms = [ViewGeometry((h, w), size, flip) for s, flip in views if s == scale]
            # Views of one scale have one padded size: one batch, as each would run alone.
            batch = torch.zeros(len(geoms), 3, pad_to(size[0], self.size_divisor), pad_to(size[1], self.size_divisor),
                                device=self.device)
            for k, geom in enumerate(geoms):
                batch[k, :, :size[0], :size[1]] = resized.flip(-1) if geom.flip else resized
            labels = label_teacher_views(self.model, batch, [geom.boxes_from_original(boxes) for geom in geoms],
                                         [classes] * len(geoms), geoms, self.options.labeller, self.view_qam_cfg,
                                         self.bpma_cfg)
            for geom, lab in zip(geoms, labels):
                ok = lab["valid"].bool()
                mapped = map_masks(lab["masks"].float(), geom, original, src_stride=MASK_STRIDE, dst_stride=1,
                                   out_shape=(h, w))
                mask_sum += mapped * ok[:, None, None]
                w_sum += lab["weights"].float() * ok
                n_valid += ok.float()
        valid = n_valid > 0
        div = n_valid.clamp_min(1.0)
        return mask_sum / div[:, None, None], w_sum / div, valid


def _xywh(box: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1 - x0, y1 - y0


# ---------------------------------------------------------------------------------------------- one annotation


def annotation_fields(mask: np.ndarray, quality: float, valid: bool, source: str, bbox: tuple[float, ...],
                      min_quality: float, fallback: str) -> dict[str, Any]:
    """The fields `boxseg label` sets on one annotation. mask bool (H,W): the labeller's mask (empty when it has
    none); bbox xywh for the fallback shape."""
    quality = round(float(quality), 6)  # the cut sees the value the file records
    valid = bool(valid) and bool(mask.any()) and quality >= min_quality
    out: dict[str, Any] = {"boxseg_quality": quality, "boxseg_valid": valid}
    if not valid:
        mask = box_mask(bbox, *mask.shape, _SHAPES[fallback]) if fallback != "none" else None
        source = fallback
    if mask is None or not mask.any():
        out.update(boxseg_valid=False, boxseg_source="none")  # the box without a mask
        return out
    out["segmentation"] = encode_masks(mask[None])[0]
    out["area"] = float(mask.sum())
    out["boxseg_source"] = source
    return out


# ---------------------------------------------------------------------------------------------- the run


def label_dataset(
    data: str | Path,
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    options: LabelOptions | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    copy_images: bool = False,
    save_every: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Label every box of a COCO dataset folder (or JSON) into OUT/annotations.json; returns a summary.

    The output keeps the input's images, categories and annotations (order, ids, boxes, classes), and adds to
    each non-crowd annotation `segmentation` (RLE) + mask `area` (box area when there is no mask),
    `boxseg_quality`, `boxseg_valid` and `boxseg_source` (qam, bpma, ellipse, box, or none: no mask), and a
    top-level `boxseg_label` record of how it was made. Crowd annotations are copied unchanged. OUT/images links
    to the input's image folder (a copy with `copy_images`).
    """
    options = options or LabelOptions()
    options.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    ds = CocoDataset(data, with_masks=False, drop_degenerate=False)  # a box that cannot be labelled is an error
    if out.resolve() == ds.ann_file.parent.resolve():
        raise LabelError(f"--out {out} is the dataset's own folder; {ds.ann_file.name} there would be replaced. "
                         "Choose another folder")
    ds.check_image_sizes()  # every file present and of the JSON's size before hours of work (headers only)
    labeller = Labeller(checkpoint, options)
    labeller.check_classes(ds)

    fingerprint = {
        "data_sha256": file_sha256(ds.ann_file),
        "checkpoint_sha256": file_sha256(checkpoint) if labeller.model is not None else None,
        **{k: v for k, v in dataclasses.asdict(options).items() if k != "device"},
        "copy_images": bool(copy_images),
    }
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    final = out / ANNOTATIONS
    partial = PartialResults(out, fingerprint)
    if partial.exists and not (resume or overwrite):
        raise LabelError(f"{out} holds an unfinished labelling ({out / STATE_DIR}); pass --resume to continue it or "
                         "--overwrite to start over")
    if final.exists() and not partial.exists and not overwrite:
        if not resume:
            raise LabelError(f"{final} exists; pass --overwrite to replace it (or --resume to keep it when it was "
                             "made with the same inputs and options)")
        done = load_json(final).get("boxseg_label", {}).get("fingerprint", {})
        diffs = fingerprint_differences(done, fingerprint)
        if diffs:
            raise LabelError(f"{final} was made with other inputs or options ({'; '.join(diffs)}); pass "
                             "--overwrite to replace it")
        return {**_summary(load_json(final), out, labeller, options), "resumed_images": len(ds),
                "seconds": time.perf_counter() - t0, "already_complete": True}
    if resume and partial.exists and not overwrite:
        partial.load()
    else:
        partial.start()
    _link_images(ds, out, copy_images)

    todo = [i for i in range(len(ds)) if ds.image_ids[i] not in partial.done]
    resumed = len(ds) - len(todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ds), initial=resumed, desc="label", unit="img", file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5)
    try:
        for n, i in enumerate(todo, 1):
            partial.add(ds.image_ids[i], _label_one(ds, i, labeller, options))
            if n % max(1, save_every) == 0:
                partial.flush()
            if bar is not None:
                bar.update(1)
    finally:
        # Images finished before an interruption (Ctrl-C included) are kept for --resume.
        if bar is not None:
            bar.close()
        partial.flush()

    result = _assemble(ds, partial.done, fingerprint, labeller, options, copy_images)
    write_atomic(final, dumps(result))
    partial.discard()
    return {**_summary(result, out, labeller, options), "resumed_images": resumed,
            "seconds": time.perf_counter() - t0, "already_complete": False}


def _label_one(ds: CocoDataset, i: int, labeller: Labeller, options: LabelOptions) -> list[dict]:
    image = ds.load_image(i)  # DataError names the file when it is missing or corrupt
    boxes, classes = ds.targets(i)
    masks, quality, valid = labeller.label_image(image, boxes, classes)
    out = []
    for k, aid in enumerate(ds.annotation_ids(i)):
        fields = annotation_fields(masks[k], float(quality[k]), bool(valid[k]), options.labeller, _xywh(boxes[k]),
                                   float(options.min_quality), options.fallback)
        out.append({"id": aid, **fields})
    return out


def _assemble(ds: CocoDataset, done: dict[int, list[dict]], fingerprint: dict, labeller: Labeller,
              options: LabelOptions, copy_images: bool) -> dict[str, Any]:
    data = load_json(ds.ann_file)  # the input as it is: order, ids and every other field kept
    by_id = {lab["id"]: lab for labels in done.values() for lab in labels}
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue  # crowd regions are not objects to label; copied unchanged
        lab = by_id.get(a["id"])
        if lab is None:
            raise LabelError(f"internal: annotation id={a['id']} was not labelled")
        a.pop("segmentation", None)  # input masks are never kept: every mask in the output is a label
        a.update({k: v for k, v in lab.items() if k != "id"})
        if "segmentation" not in lab:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
    data["boxseg_label"] = {
        "source_data": str(ds.ann_file), "labeller": options.labeller, "tta": options.tta,
        "tta_views": [[s, f] for s, f in tta_views(options.tta)] if labeller.model is not None else [],
        "fallback": options.fallback, "min_quality": options.min_quality,
        "overlap": labeller.cleanup_cfg.overlap_resolution, "box_agreement": labeller.cleanup_cfg.box_agreement,
        "box_agreement_thresh": labeller.cleanup_cfg.box_agreement_thresh, "tau_pixel": labeller.tau_pixel,
        "images": "copied" if copy_images else "linked", **labeller.checkpoint_info, "fingerprint": fingerprint,
    }
    return data


def _summary(result: dict, out: Path, labeller: Labeller, options: LabelOptions) -> dict[str, Any]:
    anns = [a for a in result["annotations"] if "boxseg_valid" in a]
    valid = [a for a in anns if a["boxseg_valid"]]
    sources: dict[str, int] = {}
    for a in anns:
        sources[a["boxseg_source"]] = sources.get(a["boxseg_source"], 0) + 1
    q = np.asarray([a["boxseg_quality"] for a in valid], dtype=np.float64)
    return {
        "out": str(out), "annotations_file": str(out / ANNOTATIONS), "images": len(result["images"]),
        "annotations": len(anns), "valid": len(valid), "valid_fraction": len(valid) / len(anns) if anns else None,
        "sources": sources, "quality_mean": float(q.mean()) if q.size else None,
        "quality_p10_50_90": [float(v) for v in np.percentile(q, [10, 50, 90])] if q.size else None,
        "labeller": options.labeller, "tta": options.tta, "model": labeller.model_source,
        "checkpoint": labeller.checkpoint_info.get("checkpoint"),
    }


def _link_images(ds: CocoDataset, out: Path, copy_images: bool) -> None:
    """OUT/images: a link to the dataset's image folder, or (copy_images) a copy of every image file."""
    link = out / IMAGES_DIR
    target = ds.image_dir.resolve()
    if copy_images:
        if link.is_symlink():
            link.unlink()
        for k in range(len(ds)):
            name = ds.image_info(k)["file_name"]
            src, dst = ds.image_dir / name, link / name
            if dst.is_file() and dst.stat().st_size == src.stat().st_size:
                continue  # copied by an interrupted run
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        return
    if link.is_symlink():
        if link.resolve() == target:
            return
        link.unlink()
    elif link.exists():
        raise LabelError(f"{link} exists and is not a link to the image folder {target}; remove it, or pass "
                         "--copy-images")
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError as e:
        raise LabelError(f"cannot link {link} -> {target} ({e}); pass --copy-images to copy the images "
                         "instead") from e


__all__ = ["LABELLERS", "LabelOptions", "Labeller", "label_dataset", "tta_views"]
