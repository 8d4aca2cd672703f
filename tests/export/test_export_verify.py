"""Output comparison rules, and the image preparation shared by verification and int8 calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from boxseg.export.errors import ExportError
from boxseg.export.images import letterbox, list_images, read_rgb
from boxseg.export.verify import (
    BORDERLINE_ERROR_MULTIPLE,
    BORDERLINE_FLOOR_ULPS,
    borderline_tolerance,
    compare_detections,
)
from PIL import Image


def _outputs(n: int = 3, d: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    boxes = np.zeros((1, d, 4), np.float32)
    xy = rng.uniform(0, 50, (n, 2))
    boxes[0, :n] = np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2))], 1)
    scores = np.zeros((1, d), np.float32)
    scores[0, :n] = np.sort(rng.uniform(0.2, 0.9, n))[::-1]
    classes = np.full((1, d), -1, np.int64)
    classes[0, :n] = rng.integers(0, 3, n)
    masks = np.zeros((1, d, 16, 16), np.float32)
    masks[0, :n, 4:12, 4:12] = 0.9
    return {"boxes": boxes, "scores": scores, "classes": classes, "masks": masks, "num_dets": np.array([n])}


def test_identical_outputs_pass_with_zero_error() -> None:
    ref = _outputs()
    report = compare_detections(ref, {k: v.copy() for k, v in ref.items()})
    assert report["passed"] and report["matched"] == 3
    assert report["box_abs_err"] == 0 and report["score_abs_err"] == 0 and report["min_mask_iou"] == 1.0


def test_near_tied_rows_in_swapped_order_still_match() -> None:
    ref = _outputs()
    ref["scores"][0, 1] = ref["scores"][0, 0] - 1e-6
    got = {k: v.copy() for k, v in ref.items()}
    for key in ("boxes", "scores", "classes", "masks"):
        got[key][0, [0, 1]] = got[key][0, [1, 0]]
    assert compare_detections(ref, got)["passed"]


def _widen_box(o: dict) -> None:
    o["boxes"][0, 0, 2] *= 1.01


def _shift_score(o: dict) -> None:
    o["scores"][0, 2] += 1e-3


def _erase_mask(o: dict) -> None:
    o["masks"][0, 1, 4:8] = 0.1


def _drop_detection(o: dict) -> None:
    o["num_dets"][0] = 2


def _dirty_padding(o: dict) -> None:
    o["classes"][0, 4] = 0


@pytest.mark.parametrize(("change", "message"), [
    (_widen_box, "box relative error"), (_shift_score, "has no counterpart"), (_erase_mask, "mask IoU"),
    (_drop_detection, "num_dets 2, expected 3"), (_dirty_padding, "padding rows"),
])
def test_each_tolerance_is_enforced(change, message: str) -> None:
    ref = _outputs()
    got = {k: v.copy() for k, v in ref.items()}
    change(got)
    report = compare_detections(ref, got)
    assert not report["passed"]
    assert any(message in f for f in report["failures"]), report["failures"]


def test_box_tolerance_is_relative_with_a_one_pixel_floor() -> None:
    ref = _outputs()
    got = {k: v.copy() for k, v in ref.items()}
    got["boxes"][0, 0, 2] += 0.9e-3 * max(abs(ref["boxes"][0, 0, 2]), 1.0)
    assert compare_detections(ref, got)["passed"]


THRESHOLD = 0.1  # the score threshold of the detection sets below; their real detections score 0.2..0.9


def _with_low_detection(score: float, score_error: float = 1e-6) -> tuple[dict, dict]:
    """(ref, got): the same three detections, got's scores off by `score_error` (the observed error), and a fourth
    detection of score `score` that only ref has (got's row 3 is padding)."""
    ref = _outputs(n=4)
    ref["scores"][0, :3] = [0.9, 0.6, 0.3]
    ref["scores"][0, 3] = score
    got = {k: v.copy() for k, v in ref.items()}
    got["scores"][0, :3] += np.float32(score_error)
    got["num_dets"][0] = 3
    got["boxes"][0, 3], got["scores"][0, 3], got["classes"][0, 3], got["masks"][0, 3] = 0, 0, -1, 0
    return ref, got


def test_tolerance_is_a_multiple_of_the_observed_score_error_with_an_ulp_floor() -> None:
    assert borderline_tolerance([1e-7, -3e-6, 2e-6], 0.05) == pytest.approx(BORDERLINE_ERROR_MULTIPLE * 3e-6)
    floor = BORDERLINE_FLOOR_ULPS * float(np.spacing(np.float32(0.05)))
    assert borderline_tolerance([], 0.05) == borderline_tolerance([0.0], 0.05) == floor
    assert 0 < floor < 1e-7  # a few float32 roundings at 0.05, nothing like a fixed guess


def test_a_detection_just_above_the_threshold_may_be_missing_and_is_reported() -> None:
    ref, got = _with_low_detection(THRESHOLD + 2e-6)  # within 4 x the 1e-6 matched error
    report = compare_detections(ref, got, score_threshold=THRESHOLD)
    assert report["passed"], report["failures"]
    assert report["matched"] == 3 and report["score_abs_err"] == pytest.approx(1e-6, rel=0.1)
    assert report["borderline_tolerance"] == pytest.approx(BORDERLINE_ERROR_MULTIPLE * report["score_abs_err"])
    [line] = report["borderline"]
    assert (line["image"], line["side"], line["index"]) == (0, "reference", 3)
    assert line["score"] == pytest.approx(THRESHOLD + 2e-6) and line["above_threshold"] == pytest.approx(2e-6, 0.1)
    # The other way round: the graph has the extra borderline detection.
    report = compare_detections(got, ref, score_threshold=THRESHOLD)
    assert report["passed"] and [(d["side"], d["index"]) for d in report["borderline"]] == [("graph", 3)]


@pytest.mark.parametrize("score", [0.3 - 1e-3, THRESHOLD + 1e-4, THRESHOLD + 1e-5])
def test_a_missing_detection_beyond_the_tolerance_still_fails(score: float) -> None:
    """Far above the threshold, or just beyond 4 x the observed 1e-6 error: a real difference."""
    ref, got = _with_low_detection(score)
    report = compare_detections(ref, got, score_threshold=THRESHOLD)
    assert not report["passed"] and report["borderline"] == []
    assert any("detection 3 " in f and "has no counterpart" in f for f in report["failures"]), report["failures"]
    assert "image 0: num_dets 3, expected 4" in report["failures"]


def test_with_exact_agreement_only_float32_rounding_counts_as_borderline() -> None:
    ulp = float(np.spacing(np.float32(THRESHOLD)))
    ref, got = _with_low_detection(float(np.float32(THRESHOLD) + np.float32(2 * ulp)), score_error=0.0)
    assert compare_detections(ref, got, score_threshold=THRESHOLD)["passed"]
    ref, got = _with_low_detection(THRESHOLD + 1e-6, score_error=0.0)  # ~130 ulps: more than rounding
    assert not compare_detections(ref, got, score_threshold=THRESHOLD)["passed"]


def _full_with_swapped_last(other_score_delta: float) -> tuple[dict, dict]:
    """(ref, got) filling all 5 slots; got's last slot holds another detection (other class and place) scoring
    `other_score_delta` away from ref's last one: the top-D cut kept a different candidate."""
    ref = _outputs(n=5, d=5)
    ref["scores"][0] = [0.9, 0.8, 0.7, 0.6, 0.5]
    got = {k: v.copy() for k, v in ref.items()}
    got["scores"][0, :4] += np.float32(1e-6)
    got["classes"][0, 4] = (ref["classes"][0, 4] + 1) % 3
    got["boxes"][0, 4] = [60, 60, 70, 70]
    got["scores"][0, 4] = ref["scores"][0, 4] + np.float32(other_score_delta)
    return ref, got


def test_at_the_last_of_the_detection_slots_a_near_tie_may_swap() -> None:
    ref, got = _full_with_swapped_last(-5e-7)
    report = compare_detections(ref, got, score_threshold=THRESHOLD)
    assert report["passed"], report["failures"]
    assert sorted((d["side"], d["cut"]) for d in report["borderline"]) == [("graph", "last of 5 slots"),
                                                                           ("reference", "last of 5 slots")]
    ref, got = _full_with_swapped_last(0.05)  # got's last one clearly outranks ref's last: ref should have it
    report = compare_detections(ref, got, score_threshold=THRESHOLD)
    assert not report["passed"]
    assert any("detection 4 of the graph" in f and "has no counterpart" in f for f in report["failures"])


def test_without_a_threshold_every_detection_must_match() -> None:
    ref, got = _with_low_detection(THRESHOLD + 1e-9)
    report = compare_detections(ref, got)
    assert not report["passed"] and report["borderline"] == [] and report["borderline_tolerance"] is None


def _png(path: Path, h: int, w: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_images_come_from_a_coco_folder_in_annotation_order(tmp_path: Path) -> None:
    for name in ("b.png", "a.png"):
        _png(tmp_path / "images" / name, 20, 30)
    coco = {"images": [{"id": 1, "file_name": "b.png"}, {"id": 2, "file_name": "a.png"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    assert [p.name for p in list_images(tmp_path)] == ["b.png", "a.png"]
    assert [p.name for p in list_images(tmp_path, limit=1)] == ["b.png"]
    coco["images"].append({"id": 3, "file_name": "gone.png"})
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(ExportError, match="image id 3 file .*gone.png.* is missing"):
        list_images(tmp_path)


def test_images_from_a_plain_folder_and_errors(tmp_path: Path) -> None:
    _png(tmp_path / "z.png", 8, 8)
    _png(tmp_path / "y.png", 8, 8)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["y.png", "z.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no images found"):
        list_images(tmp_path / "empty")
    with pytest.raises(ExportError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(ExportError, match="cannot read image"):
        read_rgb(tmp_path / "notes.txt")


def test_letterbox_keeps_aspect_ratio_and_pads_bottom_right() -> None:
    img = np.full((100, 200, 3), 200, np.uint8)
    canvas, scale = letterbox(img, (128, 160))
    assert canvas.shape == (3, 128, 160) and canvas.dtype == np.float32 and scale == pytest.approx(0.8)
    assert np.all(canvas[:, :80, :] == 200) and np.all(canvas[:, 80:, :] == 0)
    stride, _ = letterbox(img, (128, 160), fill_canvas=False)
    assert stride.shape == (3, 96, 160)  # 80 rows padded to the next multiple of 32
