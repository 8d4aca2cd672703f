"""COCO-format dataset reader for box-supervised training (boxes + classes) and evaluation (masks).

Validation happens once, at construction, on the JSON alone: every problem raises `DataError` naming the file, the
id and the field. Images are opened only in `ds[i]` (or all up front with `ds.check_images()`, or just their
headers with `ds.check_image_sizes()`).

This is the one reader of COCO files: training, evaluation (`boxseg.eval.coco_eval.load_gt`, so the baselines
too) and the exporter's checks all go through it, so pycocotools only ever sees validated segmentations
(`boxseg.data.segmentation`). File names must stay inside the image folder unless `allow_outside_images`
(or the environment variable BOXSEG_ALLOW_OUTSIDE_IMAGES=1, which `--allow-outside-images` sets) says otherwise.

Label files written by `boxseg label` add three fields per annotation (`LABEL_FIELDS`): `boxseg_quality` (the mask's
quality w in [0, 1]), `boxseg_valid` (false: no usable mask) and `boxseg_source`. The reader checks them, lets an
invalid label go without a segmentation (its box still trains detection; its mask reads as empty) and hands
`mask_quality` / `mask_valid` to mask-supervised training (`has_labels`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import UnidentifiedImageError

from boxseg.data.errors import DataError
from boxseg.data.images import read_rgb, read_size
from boxseg.data.segmentation import segmentation_problem, segmentation_to_mask

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
ALLOW_OUTSIDE_ENV = "BOXSEG_ALLOW_OUTSIDE_IMAGES"
LABEL_FIELDS = ("boxseg_quality", "boxseg_valid", "boxseg_source")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def outside_images_allowed(flag: bool | None = None) -> bool:
    """An explicit flag wins; None reads BOXSEG_ALLOW_OUTSIDE_IMAGES (how the CLI reaches the trainer's reader)."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ALLOW_OUTSIDE_ENV, "").strip().lower() in ("1", "true", "yes")


def file_name_problem(name: str) -> str | None:
    """Why `name` would be read from outside its image folder (an absolute path, a drive, or '..' climbing
    above it), else None. Purely lexical: a symlink inside the folder is the dataset owner's own choice."""
    if "\x00" in name:
        return "contains a NUL character"
    win = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or win.drive or win.root:
        return "is an absolute path"
    depth = 0
    for part in name.replace("\\", "/").split("/"):  # a backslash separates folders on Windows
        if part == "..":
            depth -= 1
            if depth < 0:
                return "climbs out of the image folder with '..'"
        elif part not in ("", "."):
            depth += 1
    return None


def resolve_paths(root_or_json: str | Path, image_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(annotation file, image folder) for a dataset folder or a JSON path."""
    p = Path(root_or_json)
    if p.is_dir():
        ann = p / ANNOTATIONS_FILE
        if not ann.is_file():
            raise DataError(f"{p}: no {ANNOTATIONS_FILE} in this folder (expected DIR/{ANNOTATIONS_FILE} and "
                            f"DIR/{IMAGES_DIR}/)")
        default_images = p / IMAGES_DIR
    elif p.is_file():
        ann = p
        default_images = p.parent / IMAGES_DIR if (p.parent / IMAGES_DIR).is_dir() else p.parent
    else:
        raise DataError(f"{p}: no such annotation file or dataset folder")
    return ann, Path(image_dir) if image_dir is not None else default_images


def load_json(path: Path) -> Any:
    """Parse a JSON file; syntax errors become DataError with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected a COCO JSON file") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


def format_report(r: dict) -> str:
    """A reader's `report` in words: boxes used, and what was clipped, dropped, skipped or left empty."""
    line = (f"{r['images']} images ({r['images_without_boxes']} without boxes), {r['boxes']} boxes used of "
            f"{r['annotations']} annotations")
    changed = {"clipped to the image": r["boxes_clipped"],
               "dropped as degenerate (w or h <= 0)": r["boxes_dropped_degenerate"],
               "dropped as outside the image": r["boxes_dropped_outside"],
               "crowd regions skipped": r["crowd_skipped"]}
    details = ", ".join(f"{n} {what}" for what, n in changed.items() if n)
    return line + (f"; {details}" if details else "")


class CocoDataset:
    """A COCO instance dataset: `ds[i]` gives the image, xyxy boxes, contiguous classes (and masks on request).

    Degenerate boxes (w <= 0 or h <= 0) and boxes entirely outside their image are dropped when
    `drop_degenerate` is true, or raise DataError otherwise; boxes partly outside are clipped. Crowd annotations
    (iscrowd=1) are not training targets and are skipped. Counts are in `ds.report` (`ds.summary()` in words).

    With `with_masks` every segmentation (crowd ones too) is validated here, before pycocotools decodes it;
    without, segmentations are not read at all (box-only training data may carry anything there).
    """

    def __init__(
        self,
        root_or_json: str | Path,
        image_dir: str | Path | None = None,
        *,
        with_masks: bool = False,
        drop_degenerate: bool = True,
        allow_outside_images: bool | None = None,
    ) -> None:
        ann_file, image_dir = resolve_paths(root_or_json, image_dir)
        self._build(load_json(ann_file), ann_file, image_dir, with_masks, drop_degenerate, allow_outside_images)

    @classmethod
    def from_data(
        cls,
        data: Any,
        source: str | Path = "ground truth",
        image_dir: str | Path | None = None,
        *,
        with_masks: bool = False,
        drop_degenerate: bool = True,
        allow_outside_images: bool | None = None,
    ) -> CocoDataset:
        """The same checks on an already-parsed COCO dict (`source` names it in errors). `data` is not copied."""
        ds = cls.__new__(cls)
        ds._build(data, Path(source), Path(image_dir) if image_dir is not None else Path(IMAGES_DIR),
                  with_masks, drop_degenerate, allow_outside_images)
        return ds

    def _build(self, data: Any, ann_file: Path, image_dir: Path, with_masks: bool, drop_degenerate: bool,
               allow_outside_images: bool | None) -> None:
        self.ann_file, self.image_dir = ann_file, image_dir
        self.with_masks = with_masks
        self.drop_degenerate = drop_degenerate
        self.allow_outside_images = outside_images_allowed(allow_outside_images)
        f = self.ann_file
        if not isinstance(data, dict):
            raise DataError(f"{f}: top level must be a JSON object with images, annotations, categories; "
                            f"got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(f"{f}: missing top-level key {key!r} (a list)")
            if not isinstance(data[key], list):
                raise DataError(f"{f}: top-level {key!r} must be a list, got {type(data[key]).__name__}")

        self._parse_categories(data["categories"])
        self._parse_images(data["images"])
        self._parse_annotations(data["annotations"])

    # --- parsing -------------------------------------------------------------------------------------------
    def _field(self, kind: str, obj: Any, pos: int, key: str, check: Any, expected: str) -> Any:
        f = self.ann_file
        if not isinstance(obj, dict):
            raise DataError(f"{f}: {kind}[{pos}] must be an object, got {type(obj).__name__}")
        ident = obj.get("id", f"#{pos}")
        if key not in obj:
            raise DataError(f"{f}: {kind} id={ident}: missing field {key!r} ({expected})")
        value = obj[key]
        if not check(value):
            raise DataError(f"{f}: {kind} id={ident}: field {key!r} must be {expected}, got {value!r}")
        return value

    def _parse_categories(self, cats: list) -> None:
        f = self.ann_file
        if not cats:
            raise DataError(f"{f}: 'categories' is empty; at least one category is needed")
        self.cat_ids: list[int] = []
        self.class_names: list[str] = []
        for pos, c in enumerate(cats):
            cid = self._field("category", c, pos, "id", _is_int, "an integer")
            name = self._field("category", c, pos, "name", lambda v: isinstance(v, str), "a string")
            if cid in self.cat_ids:
                raise DataError(f"{f}: category id={cid}: duplicate category id")
            self.cat_ids.append(cid)
            self.class_names.append(name)
        # COCO ids need not be contiguous: classes are indices into the id list sorted ascending.
        order = sorted(range(len(self.cat_ids)), key=lambda k: self.cat_ids[k])
        self.cat_ids = [self.cat_ids[k] for k in order]
        self.class_names = [self.class_names[k] for k in order]
        self._cat_index = {cid: k for k, cid in enumerate(self.cat_ids)}

    def _parse_images(self, images: list) -> None:
        f = self.ann_file
        if not images:
            raise DataError(f"{f}: 'images' is empty; the dataset has no images")
        self._images: list[dict] = []
        seen: set[int] = set()
        for pos, im in enumerate(images):
            iid = self._field("image", im, pos, "id", _is_int, "an integer")
            name = self._field("image", im, pos, "file_name", lambda v: isinstance(v, str) and v, "a file name")
            w = self._field("image", im, pos, "width", lambda v: _is_int(v) and v > 0, "a positive integer")
            h = self._field("image", im, pos, "height", lambda v: _is_int(v) and v > 0, "a positive integer")
            if not self.allow_outside_images:
                problem = file_name_problem(name)
                if problem:
                    raise DataError(
                        f"{f}: image id={iid}: field 'file_name' {name!r} {problem}; expected a path relative to "
                        f"the image folder {self.image_dir}. If the images really live elsewhere, pass "
                        f"--allow-outside-images (CocoDataset(..., allow_outside_images=True)).")
            if iid in seen:
                raise DataError(f"{f}: image id={iid}: duplicate image id")
            seen.add(iid)
            self._images.append({"id": iid, "file_name": name, "width": w, "height": h})
        self.image_ids: list[int] = [im["id"] for im in self._images]
        self._image_index = {iid: k for k, iid in enumerate(self.image_ids)}

    def _parse_annotations(self, anns: list) -> None:
        f = self.ann_file
        report = {"images": len(self._images), "annotations": len(anns), "boxes": 0, "boxes_clipped": 0,
                  "boxes_dropped_degenerate": 0, "boxes_dropped_outside": 0, "crowd_skipped": 0,
                  "images_without_boxes": 0}
        self._anns: list[list[dict]] = [[] for _ in self._images]
        self.has_labels = False  # any annotation carries boxseg_quality / boxseg_valid (a `boxseg label` file)
        seen: set[int] = set()
        for pos, a in enumerate(anns):
            aid = self._field("annotation", a, pos, "id", _is_int, "an integer")
            if aid in seen:
                raise DataError(f"{f}: annotation id={aid}: duplicate annotation id")
            seen.add(aid)
            iid = self._field("annotation", a, pos, "image_id", _is_int, "an integer")
            cid = self._field("annotation", a, pos, "category_id", _is_int, "an integer")
            bbox = self._field("annotation", a, pos, "bbox",
                               lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_number, v)),
                               "a list of 4 finite numbers [x, y, w, h]")
            if iid not in self._image_index:
                raise DataError(f"{f}: annotation id={aid}: field 'image_id' refers to unknown image id {iid}")
            if cid not in self._cat_index:
                raise DataError(f"{f}: annotation id={aid}: field 'category_id' refers to unknown category id "
                                f"{cid} (known: {self.cat_ids})")
            crowd = a.get("iscrowd", 0)
            if crowd not in (0, 1, True, False):
                raise DataError(f"{f}: annotation id={aid}: field 'iscrowd' must be 0 or 1, got {crowd!r}")
            info = self._images[self._image_index[iid]]
            quality, valid = self._label_fields(a, aid)
            if self.with_masks:
                self._check_mask_fields(a, aid, info, valid)
            if crowd:
                report["crowd_skipped"] += 1
                continue
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                if not self.drop_degenerate:
                    raise DataError(f"{f}: annotation id={aid}: field 'bbox' has non-positive size w={w}, h={h}")
                report["boxes_dropped_degenerate"] += 1
                continue
            x0, y0 = min(max(x, 0.0), info["width"]), min(max(y, 0.0), info["height"])
            x1, y1 = min(max(x + w, 0.0), info["width"]), min(max(y + h, 0.0), info["height"])
            if x1 <= x0 or y1 <= y0:
                if not self.drop_degenerate:
                    raise DataError(f"{f}: annotation id={aid}: field 'bbox' {bbox} lies outside image id={iid} "
                                    f"({info['width']}x{info['height']})")
                report["boxes_dropped_outside"] += 1
                continue
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                report["boxes_clipped"] += 1
            report["boxes"] += 1
            self._anns[self._image_index[iid]].append(
                {"id": aid, "box": (x0, y0, x1, y1), "cls": self._cat_index[cid],
                 "segmentation": a.get("segmentation"), "quality": quality, "valid": valid})
        report["images_without_boxes"] = sum(1 for lst in self._anns if not lst)
        self.report: dict[str, int] = report

    def _label_fields(self, a: dict, aid: int) -> tuple[float, bool]:
        """(boxseg_quality, boxseg_valid) of a `boxseg label` annotation; (1.0, True) for a plain one."""
        f = self.ann_file
        quality, valid = a.get("boxseg_quality", 1.0), a.get("boxseg_valid", True)
        if "boxseg_quality" in a or "boxseg_valid" in a:
            self.has_labels = True
        if not (_is_number(quality) and 0.0 <= quality <= 1.0):
            raise DataError(f"{f}: annotation id={aid}: field 'boxseg_quality' must be a number in [0, 1], got "
                            f"{quality!r}")
        if not isinstance(valid, bool):
            raise DataError(f"{f}: annotation id={aid}: field 'boxseg_valid' must be true or false, got {valid!r}")
        return float(quality), valid

    def _check_mask_fields(self, a: dict, aid: int, info: dict, valid: bool = True) -> None:
        f = self.ann_file
        if "segmentation" not in a and not valid:
            return  # an invalid `boxseg label` label: the box without a mask (it reads as an empty mask)
        if "segmentation" not in a:
            raise DataError(f"{f}: annotation id={aid}: missing field 'segmentation' (masks were requested: "
                            f"expected polygons or an RLE object)")
        problem = segmentation_problem(a["segmentation"], info["height"], info["width"])
        if problem:
            raise DataError(f"{f}: annotation id={aid} (image id={info['id']}): field 'segmentation' {problem}")
        if "area" in a and not (_is_number(a["area"]) and a["area"] >= 0):
            raise DataError(f"{f}: annotation id={aid}: field 'area' must be a finite number >= 0, got "
                            f"{a['area']!r}")

    # --- access --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._images)

    def image_info(self, i: int) -> dict:
        """`{"id", "file_name", "width", "height"}` of image i, from the JSON (no file access)."""
        return dict(self._images[i])

    def _where(self, i: int) -> tuple[Path, str]:
        info = self._images[i]
        path = self.image_dir / info["file_name"]
        return path, f"{path} (image id={info['id']}, file_name {info['file_name']!r} in {self.ann_file})"

    def _size_problem(self, i: int, w: int, h: int) -> str | None:
        info = self._images[i]
        if (w, h) == (info["width"], info["height"]):
            return None
        return (f"{self._where(i)[1]}: image is {w}x{h} (after EXIF orientation) but the JSON fields "
                f"'width'/'height' say {info['width']}x{info['height']}; fix the JSON (masks and boxes are "
                f"placed by those fields)")

    def load_image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB, EXIF orientation applied; DataError when missing, unreadable or mis-sized."""
        path, where = self._where(i)
        try:
            arr = read_rgb(path)
        except FileNotFoundError as e:
            raise DataError(f"{where}: image file not found") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{where}: cannot read image: {e}") from e
        h, w = arr.shape[:2]
        problem = self._size_problem(i, w, h)
        if problem:
            raise DataError(problem)
        return arr

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of image i's file after EXIF orientation, from its header only (no pixel decoding)."""
        path, where = self._where(i)
        try:
            w, h = read_size(path)
        except FileNotFoundError as e:
            raise DataError(f"{where}: image file not found") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{where}: cannot read image: {e}") from e
        return w, h

    def check_image_sizes(self) -> None:
        """Every image file exists and has the JSON's width/height; one DataError listing every problem.

        Reads headers only, so it is cheap enough for evaluations that never decode the pixels (the baselines),
        whose masks would otherwise be drawn on the wrong canvas without a word.
        """
        problems = []
        for i in range(len(self)):
            try:
                problem = self._size_problem(i, *self.image_size(i))
            except DataError as e:
                problem = str(e)
            if problem:
                problems.append(problem)
        if problems:
            more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"{len(problems)} of {len(self)} images do not match the JSON:\n"
                            + "\n".join(problems[:20]) + more)

    def targets(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes float32 (n, 4) xyxy, classes int64 (n,)) of image i, without loading the image."""
        anns = self._anns[i]
        boxes = np.asarray([a["box"] for a in anns], dtype=np.float32).reshape(-1, 4)
        classes = np.asarray([a["cls"] for a in anns], dtype=np.int64)
        return boxes, classes

    def has_masks(self) -> bool:
        """True when every annotation carries a segmentation (the synthetic data does; box-only data does not)."""
        return bool(self._anns) and all(a.get("segmentation") is not None for anns in self._anns for a in anns)

    def load_masks(self, i: int) -> np.ndarray:
        """bool (n, H, W) masks of image i in annotation order (polygons, RLE or uncompressed RLE)."""
        info = self._images[i]
        h, w = info["height"], info["width"]
        out = np.zeros((len(self._anns[i]), h, w), dtype=bool)
        for k, a in enumerate(self._anns[i]):
            seg = a["segmentation"]
            if seg is None and not a["valid"]:
                continue  # an invalid label without a mask: empty, and mask_valid says to ignore it
            # Checked again here: a dataset read without masks never validated its segmentations.
            problem = segmentation_problem(seg, h, w)
            if problem:
                raise DataError(f"{self.ann_file}: annotation id={a['id']} (image id={info['id']}): field "
                                f"'segmentation' {problem}")
            out[k] = segmentation_to_mask(seg, h, w)
        return out

    def label_weights(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxseg_quality float32 (n,), boxseg_valid bool (n,)) of image i in annotation order; 1 and true for
        annotations without the fields."""
        anns = self._anns[i]
        return (np.asarray([a["quality"] for a in anns], dtype=np.float32).reshape(-1),
                np.asarray([a["valid"] for a in anns], dtype=bool).reshape(-1))

    def annotation_ids(self, i: int) -> list[int]:
        """COCO ids of image i's annotations in the order of `targets(i)` / `load_masks(i)`."""
        return [a["id"] for a in self._anns[i]]

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i %= len(self)
        boxes, classes = self.targets(i)
        info = self._images[i]
        item = {"image": self.load_image(i), "boxes": boxes, "classes": classes, "image_id": info["id"],
                "file_name": info["file_name"]}
        if self.with_masks:
            item["masks"] = self.load_masks(i)
            if self.has_labels:
                item["mask_quality"], item["mask_valid"] = self.label_weights(i)
        return item

    def check_images(self) -> None:
        """Open every image now; one DataError listing every problem (missing, unreadable, wrong size)."""
        problems = []
        for i in range(len(self)):
            try:
                self.load_image(i)
            except DataError as e:
                problems.append(str(e))
        if problems:
            more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"{len(problems)} of {len(self)} images failed:\n" + "\n".join(problems[:20]) + more)

    def summary(self) -> str:
        """One line on what was read and what was clipped, dropped or skipped."""
        r = self.report
        return (f"{self.ann_file}: {r['images']} images ({r['images_without_boxes']} without boxes), "
                f"{r['boxes']} boxes in {len(self.class_names)} classes; clipped {r['boxes_clipped']}, "
                f"dropped {r['boxes_dropped_degenerate']} degenerate and {r['boxes_dropped_outside']} outside, "
                f"skipped {r['crowd_skipped']} crowd")
