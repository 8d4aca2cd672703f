"""Hostile dataset files: every consumer (eval baselines, checkpoint eval's ground truth, training's mask loader)
reads them through the one validating reader and gets a clear error naming the file, the annotation and the field.

The segmentations that once crashed or hung pycocotools run in a child process with a memory limit and a timeout.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hostile_helpers import H, W, boxseg_limited, python_limited, valid_coco, write_dataset

from boxseg.cli import main
from boxseg.data.coco import CocoDataset
from boxseg.data.errors import DataError

# Each consumer of a dataset file that hands segmentations to pycocotools, as one child-process script. It prints
# one JSON line per consumer: the DataError message, or "ok" (which the tests treat as a failure to refuse).
_CONSUMERS = """
import json, sys
from boxseg.data.coco import CocoDataset
from boxseg.data.errors import DataError
from boxseg.eval.baselines import baseline_results
from boxseg.eval.coco_eval import evaluate
path = sys.argv[1]
def attempt(name, fn):
    try:
        fn()
        print(json.dumps({name: "ok"}))
    except DataError as e:
        print(json.dumps({name: str(e)}))
attempt("checkpoint_eval_gt", lambda: evaluate(path, []))
attempt("baseline", lambda: baseline_results(path, "ellipse"))
attempt("training_masks", lambda: CocoDataset(path).load_masks(0))
"""

# (annotation field value, words the error must contain)
CRASHERS = {
    "nan_polygon": ([[10, 10, float("nan"), 10, 15, 15, 10, 15]], "value 2 is nan; expected a finite number"),
    "infinite_polygon": ([[10, 10, 15, 10, float("inf"), 15]], "value 4 is inf; expected a finite number"),
    "huge_polygon": ([[10, 10, 1e12, 10, 15, 15]], "lies far outside the 32x24 image"),
    "garbage_rle": ({"size": [H, W], "counts": "garbage!!~~"}, "does not decode"),
    "truncated_rle": ({"size": [H, W], "counts": "0`"}, "does not decode: it ends inside a run"),
    "short_rle": ({"size": [H, W], "counts": "05"}, f"expected height * width = {H} * {W}"),
    "negative_uncompressed_rle": ({"size": [H, W], "counts": [10, -5, H * W - 5]}, "run 1 has length -5"),
}


def _with_segmentation(seg, ann: int = 1) -> dict:
    data = valid_coco()
    data["annotations"][ann]["segmentation"] = seg
    return data


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_crashing_segmentations_are_refused_by_every_consumer(tmp_path: Path, case: str) -> None:
    seg, words = CRASHERS[case]
    root = write_dataset(tmp_path, _with_segmentation(seg))
    ann = root / "annotations.json"
    proc = boxseg_limited("eval", "--data", str(root), "--baseline", "ellipse")
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    for needed in (str(ann), "annotation id=2", "field 'segmentation'", words):
        assert needed in proc.stderr, (needed, proc.stderr)
    api = python_limited(_CONSUMERS.replace("sys.argv[1]", repr(str(ann))))
    assert api.returncode == 0, (api.returncode, api.stderr[-2000:])
    results = {k: v for line in api.stdout.splitlines() for k, v in json.loads(line).items()}
    assert set(results) == {"checkpoint_eval_gt", "baseline", "training_masks"}
    for consumer, message in results.items():
        assert words in message and "annotation id=2" in message, (consumer, message)


@pytest.mark.parametrize(("seg", "words"), [
    ([[1, 2]], "polygon 0 has 2 numbers; expected an even count >= 6"),
    ([[1, 2, 3, 4, 5, 6, 7]], "polygon 0 has 7 numbers"),
    ("abc", "is 'abc' (str); expected a list of polygons"),
    ([], "is an empty list; expected at least one polygon"),
    ([["1", 2, 3, 4, 5, 6]], "polygon 0, value 0 is '1'; expected a number"),
    ({"counts": "abc"}, "RLE object without 'size'"),
    ({"size": [1, 1], "counts": "1"}, f"has RLE 'size' [1, 1]; expected the image's [height, width] = [{H}, {W}]"),
    ({"size": [H, W], "counts": 17}, "RLE 'counts' of type int"),
])
def test_invalid_segmentations_name_file_annotation_field_and_expectation(tmp_path: Path, seg, words) -> None:
    write_dataset(tmp_path, _with_segmentation(seg), images=False)
    with pytest.raises(DataError) as exc:
        CocoDataset(tmp_path, with_masks=True)
    msg = str(exc.value)
    for needed in (str(tmp_path / "annotations.json"), "annotation id=2", "field 'segmentation'", words):
        assert needed in msg, (needed, msg)
    # Training reads boxes only: the same file still trains (the masks are never decoded there).
    assert len(CocoDataset(tmp_path)) == 2


@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "/etc/hostname", "C:\\x.png",
                                  "..\\..\\x.png"])
def test_file_names_outside_the_image_folder_need_an_option(tmp_path: Path, name: str) -> None:
    data = valid_coco()
    data["images"][1]["file_name"] = name
    write_dataset(tmp_path, data, images=False)
    with pytest.raises(DataError) as exc:
        CocoDataset(tmp_path)
    msg = str(exc.value)
    assert "image id=9" in msg and "'file_name'" in msg and repr(name) in msg and "--allow-outside-images" in msg
    assert CocoDataset(tmp_path, allow_outside_images=True).image_info(1)["file_name"] == name


def test_eval_reads_an_outside_image_only_with_the_flag(tmp_path: Path) -> None:
    data = valid_coco()
    data["images"][1]["file_name"] = "../elsewhere/b.png"
    root = write_dataset(tmp_path / "ds", data, images=False)
    (root / "images").mkdir(exist_ok=True)
    from PIL import Image

    Image.new("RGB", (W, H)).save(root / "images" / "a.png")
    (tmp_path / "ds" / "elsewhere").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "ds" / "elsewhere" / "b.png")
    refused = CliRunner().invoke(main, ["eval", "--data", str(root), "--baseline", "box-fill"])
    assert refused.exit_code == 1 and "climbs out of the image folder" in refused.output
    allowed = CliRunner().invoke(main, ["eval", "--data", str(root), "--baseline", "box-fill", "--json",
                                        "--allow-outside-images"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["bbox"]["AP"] == pytest.approx(100.0)


def test_baseline_eval_refuses_a_width_height_mismatch(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, valid_coco(), sizes={"b.png": (W + 8, H)})
    r = CliRunner().invoke(main, ["eval", "--data", str(root), "--baseline", "ellipse"])
    assert r.exit_code == 1
    assert "b.png" in r.output and "image id=9" in r.output
    assert f"image is {W + 8}x{H}" in r.output and f"say {W}x{H}" in r.output and "fix the JSON" in r.output


def test_eval_header_counts_the_instances_cocoeval_scores_and_reports_the_dataset(tmp_path: Path) -> None:
    from pycocotools.cocoeval import COCOeval

    from boxseg.eval.baselines import baseline_results
    from boxseg.eval.coco_eval import _load_results, load_gt

    data = valid_coco()
    extra = copy.deepcopy(data["annotations"][1])
    extra.update(id=4, bbox=[5, 5, 0, 7])  # degenerate box: dropped for training, still scored by COCOeval
    outside = copy.deepcopy(data["annotations"][1])
    outside.update(id=5, bbox=[W + 3, 0, 4, 4])  # wholly outside: dropped for training, still scored
    data["annotations"] += [extra, outside]
    root = write_dataset(tmp_path, data)
    # What COCOeval itself scores: ground truths not ignored in the "all" area range, over all images/classes.
    gt = load_gt(root / "annotations.json")
    ev = COCOeval(gt, _load_results(gt, baseline_results(gt, "box-fill"), "bbox", False), iouType="bbox")
    ev.evaluate()
    scored = sum(int((~e["gtIgnore"].astype(bool)).sum()) for e in ev.evalImgs
                 if e is not None and e["aRng"] == ev.params.areaRng[0])
    assert scored == 4  # 5 annotations, one crowd region

    r = CliRunner().invoke(main, ["eval", "--data", str(root), "--baseline", "box-fill"])
    assert r.exit_code == 0, r.output
    assert f"(2 images, {scored} instances scored)" in r.output
    assert "1 dropped as degenerate" in r.output and "1 dropped as outside the image" in r.output
    assert "1 crowd regions skipped" in r.output and "2 boxes used of 5 annotations" in r.output
    j = json.loads(CliRunner().invoke(main, ["eval", "--data", str(root), "--baseline", "box-fill", "--json"]).stdout)
    assert j["instances"] == scored
    assert j["report"]["boxes_dropped_degenerate"] == 1 and j["report"]["boxes_dropped_outside"] == 1
    assert j["report"]["images_without_boxes"] == 1  # image 9 holds only the crowd region


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_nan_score_threshold_is_a_usage_error(tmp_path: Path, command: str) -> None:
    root = write_dataset(tmp_path / "ds", valid_coco())
    args = (["eval", "--data", str(root), "--baseline", "box-fill"] if command == "eval" else
            ["predict", "--model", str(tmp_path / "m.onnx"), "--images", str(root / "images"), "--out",
             str(tmp_path / "out")])
    r = CliRunner().invoke(main, [*args, "--score-thr", "nan"])
    assert r.exit_code == 2 and "'nan' is not a number; expected a threshold in [0, 1]" in r.output


def test_train_reaches_its_reader_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `boxseg train --allow-outside-images` sets BOXSEG_ALLOW_OUTSIDE_IMAGES=1 for the trainer's reader (and its
    # DataLoader workers), and restores the environment afterwards.
    from boxseg.cli.train import _outside_images
    from boxseg.data.coco import ALLOW_OUTSIDE_ENV

    data = valid_coco()
    data["images"][0]["file_name"] = "/data/shared/a.png"
    write_dataset(tmp_path, data, images=False)
    monkeypatch.delenv(ALLOW_OUTSIDE_ENV, raising=False)
    with pytest.raises(DataError, match="is an absolute path"):
        CocoDataset(tmp_path)
    with _outside_images(True):
        assert CocoDataset(tmp_path).image_info(0)["file_name"] == "/data/shared/a.png"
    assert ALLOW_OUTSIDE_ENV not in os.environ
    with pytest.raises(DataError):
        CocoDataset(tmp_path)
    assert len(CocoDataset(tmp_path, allow_outside_images=True)) == 2
