"""`boxseg label` end to end on a tiny synthetic split: what the output keeps, what it adds, and the options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from boxseg.cli import main
from boxseg.data.coco import CocoDataset


def _label(*args: str) -> dict:
    r = CliRunner().invoke(main, ["label", "--no-progress", "--json", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _anns(out: Path) -> list[dict]:
    return json.loads((out / "annotations.json").read_text())["annotations"]


def _inside_box(a: dict) -> bool:
    m = mask_utils.decode(a["segmentation"]).astype(bool)
    x, y, w, h = a["bbox"]
    ys, xs = np.nonzero(m)
    # pixel centres inside the closed box (the convention of boxseg.ops.box_masks)
    return bool(((xs + 0.5 >= x) & (xs + 0.5 <= x + w) & (ys + 0.5 >= y) & (ys + 0.5 <= y + h)).all())


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, label_data: Path, checkpoint: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("labels") / "out"
    return out, _label("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(out))


def test_round_trip_keeps_every_annotation_and_adds_masks_inside_boxes(labelled, label_data: Path):
    out, summary = labelled
    src = json.loads((label_data / "annotations.json").read_text())
    dst = json.loads((out / "annotations.json").read_text())
    assert dst["images"] == src["images"] and dst["categories"] == src["categories"]
    assert [a["id"] for a in dst["annotations"]] == [a["id"] for a in src["annotations"]]
    for a, b in zip(src["annotations"], dst["annotations"]):
        assert (b["image_id"], b["category_id"], b["bbox"]) == (a["image_id"], a["category_id"], a["bbox"])
        assert set(b) >= {"boxseg_quality", "boxseg_valid", "boxseg_source"}
        assert 0.0 <= b["boxseg_quality"] <= 1.0
        if b["boxseg_valid"]:
            assert b["boxseg_source"] == "qam" and isinstance(b["segmentation"]["counts"], str)
            assert b["area"] == float(mask_utils.area(b["segmentation"])) > 0
            assert _inside_box(b)
        else:  # the box without a mask; never the input's GT mask
            assert "segmentation" not in b and b["boxseg_source"] == "none"
            assert b["area"] == b["bbox"][2] * b["bbox"][3]
    assert summary["annotations"] == len(src["annotations"]) and summary["valid"] > 0
    assert summary["model"] == "teacher" and dst["boxseg_label"]["model"] == "teacher"
    # images are referenced: OUT/images links to the dataset's folder, and the output reads as a dataset
    assert (out / "images").is_symlink() and (out / "images").resolve() == (label_data / "images").resolve()
    ds = CocoDataset(out, with_masks=True)
    assert ds.has_labels and len(ds) == len(src["images"])
    ds.check_images()


def test_labels_with_the_teacher_when_the_checkpoint_has_one(tmp_path: Path, checkpoint: Path,
                                                             class_names: list[str]):
    from boxseg.train.checkpoint import load_checkpoint
    from boxseg.train.label import Labeller, LabelOptions
    from label_helpers import make_checkpoint_file

    lab = Labeller(checkpoint, LabelOptions())
    teacher = load_checkpoint(checkpoint)["teacher"]
    assert lab.model_source == "teacher"
    assert all(torch.equal(v, teacher[k]) for k, v in lab.model.state_dict().items())
    student_only = make_checkpoint_file(tmp_path / "s.pt", class_names, teacher=False, preset="boxinst")
    lab = Labeller(student_only, LabelOptions())
    assert lab.model_source == "student"
    assert all(torch.equal(v, load_checkpoint(student_only)["model"][k]) for k, v in lab.model.state_dict().items())


def test_tta_and_clean_up_options(tmp_path: Path, label_data: Path, checkpoint: Path):
    runs = {}
    for name, extra in {"flip": ["--tta", "flip"], "scales": ["--tta", "flip+scales"],
                        "smaller": ["--overlap", "smaller-wins"], "gate": ["--box-agreement", "gate:0.99"],
                        "multiply": ["--box-agreement", "multiply"], "none": []}.items():
        out = tmp_path / name
        _label("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(out), *extra)
        runs[name] = _anns(out)
    for name, anns in runs.items():
        assert all(_inside_box(a) for a in anns if a["boxseg_valid"]), name
    assert json.loads((tmp_path / "scales" / "annotations.json").read_text())["boxseg_label"]["tta_views"] == [
        [0.75, False], [0.75, True], [1.0, False], [1.0, True], [1.25, False], [1.25, True]]
    # smaller-wins: no pixel belongs to two masks of one image
    by_image: dict[int, list[np.ndarray]] = {}
    for a in runs["smaller"]:
        if a["boxseg_valid"]:
            by_image.setdefault(a["image_id"], []).append(mask_utils.decode(a["segmentation"]).astype(int))
    assert all(np.stack(ms).sum(0).max() <= 1 for ms in by_image.values())
    overlapping = sum(int(np.stack(ms).sum(0).max() > 1) for ms in (
        [mask_utils.decode(a["segmentation"]).astype(int) for a in runs["none"]
         if a["boxseg_valid"] and a["image_id"] == iid] for iid in by_image) if ms)
    assert overlapping > 0  # the option changed something on this data
    # gate drops masks whose tight box disagrees with the GT box; multiply only lowers w
    base = {a["id"]: a for a in runs["none"]}
    assert sum(a["boxseg_valid"] for a in runs["gate"]) < sum(a["boxseg_valid"] for a in runs["none"])
    for a in runs["multiply"]:
        assert a["boxseg_quality"] <= base[a["id"]]["boxseg_quality"] + 1e-6
        assert a["boxseg_valid"] == base[a["id"]]["boxseg_valid"]


def test_min_quality_and_fallback(tmp_path: Path, label_data: Path, checkpoint: Path):
    base = _label("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(tmp_path / "a"))
    w = sorted(a["boxseg_quality"] for a in _anns(tmp_path / "a") if a["boxseg_valid"])
    cut = w[len(w) // 2]
    _label("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(tmp_path / "b"),
           "--min-quality", str(cut), "--fallback", "ellipse")
    before = {a["id"]: a for a in _anns(tmp_path / "a")}
    for a in _anns(tmp_path / "b"):
        old = before[a["id"]]
        keep = old["boxseg_valid"] and old["boxseg_quality"] >= cut
        assert a["boxseg_valid"] == keep
        if keep:
            assert a["segmentation"] == old["segmentation"] and a["boxseg_source"] == "qam"
        else:  # the fallback shape, still invalid, w kept for the record
            assert a["boxseg_source"] == "ellipse" and _inside_box(a)
            assert a["boxseg_quality"] == old["boxseg_quality"]
    assert base["valid"] > sum(a["boxseg_valid"] for a in _anns(tmp_path / "b"))


def test_shape_labellers_need_no_checkpoint_and_copy_images(tmp_path: Path, label_data: Path):
    s = _label("--labeller", "ellipse", "--data", str(label_data), "--out", str(tmp_path / "e"), "--copy-images")
    assert s["valid"] == s["annotations"] and s["sources"] == {"ellipse": s["annotations"]}
    assert (tmp_path / "e" / "images").is_dir() and not (tmp_path / "e" / "images").is_symlink()
    assert sorted(p.name for p in (tmp_path / "e" / "images").iterdir()) == sorted(
        p.name for p in (label_data / "images").iterdir())
    from boxseg.eval.baselines import box_mask

    for a in _anns(tmp_path / "e"):
        want = box_mask(a["bbox"], 64, 64, "ellipse")
        assert np.array_equal(mask_utils.decode(a["segmentation"]).astype(bool), want)
        assert a["boxseg_quality"] == 1.0


def test_bpma_labeller(tmp_path: Path, label_data: Path, checkpoint: Path):
    s = _label("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(tmp_path / "b"),
               "--labeller", "bpma", "--tta", "flip")
    assert set(s["sources"]) <= {"bpma", "none"} and s["annotations"] == 23
    assert all(_inside_box(a) for a in _anns(tmp_path / "b") if a["boxseg_valid"])
