"""COCO reader: one test per kind of bad input, plus conversions (EXIF, grey, RGBA, 16-bit) and negatives."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from boxseg.data.coco import CocoDataset
from boxseg.data.errors import DataError

H, W = 24, 32


def _base() -> dict:
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((4, 6), np.uint8), ((2, H - 6), (3, W - 9)))))
    return {
        "images": [{"id": 7, "file_name": "a.png", "width": W, "height": H},
                   {"id": 9, "file_name": "b.png", "width": W, "height": H}],
        "categories": [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [3, 2, 6, 4], "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [10, 10, 5, 5], "iscrowd": 0,
             "segmentation": [[10, 10, 15, 10, 15, 15, 10, 15]]},
        ],
    }


def _write(root: Path, data: dict | str, images: bool = True) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (root / "annotations.json").write_text(text)
    if images and not isinstance(data, str):
        for im in data.get("images", []):
            if "file_name" not in im:
                continue
            Image.new("RGB", (im["width"], im["height"]), (10, 20, 30)).save(root / "images" / im["file_name"])
    return root


def _error(tmp_path: Path, data: dict | str, **kw) -> str:
    _write(tmp_path, data)
    with pytest.raises(DataError) as exc:
        CocoDataset(tmp_path, **kw)
    return str(exc.value)


def test_valid_dataset_reads_boxes_classes_and_keeps_negatives(tmp_path: Path) -> None:
    ds = CocoDataset(_write(tmp_path, _base()), with_masks=True)
    assert len(ds) == 2 and ds.image_ids == [7, 9]
    assert ds.cat_ids == [2, 5] and ds.class_names == ["two", "five"]  # non-contiguous ids -> contiguous
    item = ds[0]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(item["boxes"], np.array([[3, 2, 9, 6], [10, 10, 15, 15]], np.float32))
    assert item["boxes"].dtype == np.float32 and item["classes"].dtype == np.int64
    np.testing.assert_array_equal(item["classes"], [1, 0])
    assert item["masks"].shape == (2, H, W) and item["masks"][0].sum() == 24 and item["masks"][1].sum() > 0
    neg = ds[1]  # an image without annotations stays, as a negative
    assert neg["boxes"].shape == (0, 4) and neg["classes"].shape == (0,) and neg["masks"].shape == (0, H, W)
    assert ds.report["images_without_boxes"] == 1 and ds.report["boxes"] == 2
    assert "masks" not in CocoDataset(tmp_path)[0]  # training reads boxes only


def test_masks_are_ignored_for_training_even_if_malformed(tmp_path: Path) -> None:
    data = _base()
    data["annotations"][0]["segmentation"] = {"size": [1, 1], "counts": "garbage"}
    ds = CocoDataset(_write(tmp_path, data))
    assert len(ds[0]["boxes"]) == 2
    with pytest.raises(DataError, match="annotation id=1.*segmentation"):
        CocoDataset(tmp_path, with_masks=True)[0]


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    msg = _error(tmp_path, '{"images": [\n  {"id": 1,,}\n]}')
    assert "annotations.json" in msg and "line 2" in msg and "column" in msg


def test_missing_top_level_key(tmp_path: Path) -> None:
    data = _base()
    del data["categories"]
    assert "'categories'" in _error(tmp_path, data)


def test_missing_field_and_wrong_type(tmp_path: Path) -> None:
    data = _base()
    del data["images"][1]["file_name"]
    msg = _error(tmp_path, data)
    assert "image id=9" in msg and "'file_name'" in msg
    data = _base()
    data["annotations"][1]["bbox"] = [1, 2, "3", 4]
    msg = _error(tmp_path, data)
    assert "annotation id=2" in msg and "'bbox'" in msg


@pytest.mark.parametrize("kind", ["images", "annotations", "categories"])
def test_duplicate_ids(tmp_path: Path, kind: str) -> None:
    data = _base()
    data[kind].append(copy.deepcopy(data[kind][0]))
    if kind == "images":
        data[kind][-1]["file_name"] = "c.png"
    msg = _error(tmp_path, data)
    assert "duplicate" in msg and f"id={data[kind][0]['id']}" in msg


def test_unknown_image_id(tmp_path: Path) -> None:
    data = _base()
    data["annotations"][1]["image_id"] = 99
    msg = _error(tmp_path, data)
    assert "annotation id=2" in msg and "'image_id'" in msg and "99" in msg


def test_unknown_category_id(tmp_path: Path) -> None:
    data = _base()
    data["annotations"][0]["category_id"] = 3
    msg = _error(tmp_path, data)
    assert "annotation id=1" in msg and "'category_id'" in msg and "3" in msg


def test_non_positive_boxes_are_dropped_and_counted(tmp_path: Path) -> None:
    data = _base()
    data["annotations"][0]["bbox"] = [3, 2, 0, 4]
    data["annotations"][1]["bbox"] = [10, 10, 5, -1]
    ds = CocoDataset(_write(tmp_path, data))
    assert ds.report["boxes_dropped_degenerate"] == 2 and ds.report["boxes"] == 0
    assert len(ds[0]["boxes"]) == 0
    msg = _error(tmp_path, data, drop_degenerate=False)
    assert "annotation id=1" in msg and "'bbox'" in msg


def test_out_of_image_boxes_are_clipped_or_dropped(tmp_path: Path) -> None:
    data = _base()
    data["annotations"][0]["bbox"] = [-4, 20, 10, 10]  # partly outside: clipped
    data["annotations"][1]["bbox"] = [W + 1, 0, 5, 5]  # wholly outside: dropped
    ds = CocoDataset(_write(tmp_path, data))
    assert ds.report["boxes_clipped"] == 1 and ds.report["boxes_dropped_outside"] == 1
    np.testing.assert_array_equal(ds[0]["boxes"], [[0, 20, 6, H]])
    assert "outside image id=7" in _error(tmp_path, data, drop_degenerate=False)


def test_empty_dataset(tmp_path: Path) -> None:
    data = _base()
    data["images"], data["annotations"] = [], []
    assert "no images" in _error(tmp_path, data)


def test_missing_image_file(tmp_path: Path) -> None:
    ds = CocoDataset(_write(tmp_path, _base()))
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png.*image id=9.*not found"):
        ds[1]
    with pytest.raises(DataError, match="1 of 2 images failed"):
        ds.check_images()


def test_unreadable_image_file(tmp_path: Path) -> None:
    ds = CocoDataset(_write(tmp_path, _base()))
    (tmp_path / "images" / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"a\.png.*image id=7.*cannot read"):
        ds[0]


def test_image_size_disagrees_with_json(tmp_path: Path) -> None:
    ds = CocoDataset(_write(tmp_path, _base()))
    Image.new("RGB", (W + 1, H)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DataError, match=rf"image id=7.*{W + 1}x{H}.*{W}x{H}"):
        ds[0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    data = _base()
    _write(tmp_path, data)
    # Stored landscape-rotated (H x W swapped) with orientation 6 (rotate 90 CW to display): displayed W x H.
    stored = np.zeros((W, H, 3), np.uint8)
    stored[0, 0] = (255, 0, 0)  # top-left when stored -> top-right when displayed
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "images" / "a.png", exif=exif)
    img = CocoDataset(tmp_path)[0]["image"]
    assert img.shape == (H, W, 3)
    assert tuple(img[0, W - 1]) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb_uint8(tmp_path: Path, mode: str) -> None:
    _write(tmp_path, _base())
    if mode == "I;16":
        arr = np.full((H, W), 65535, np.uint16)
        arr[0, 0] = 0
        Image.fromarray(arr).save(tmp_path / "images" / "a.png")
    else:
        Image.new(mode, (W, H), 200 if mode in ("L", "P") else (200, 100, 50, 128)).save(
            tmp_path / "images" / "a.png")
    img = CocoDataset(tmp_path)[0]["image"]
    assert img.dtype == np.uint8 and img.shape == (H, W, 3)
    if mode == "I;16":
        assert tuple(img[1, 1]) == (255, 255, 255) and tuple(img[0, 0]) == (0, 0, 0)
    if mode == "RGBA":
        assert tuple(img[1, 1]) == (200, 100, 50)


def test_crowd_annotations_are_not_targets(tmp_path: Path) -> None:
    data = _base()
    data["annotations"][1]["iscrowd"] = 1
    ds = CocoDataset(_write(tmp_path, data))
    assert len(ds[0]["boxes"]) == 1 and ds.report["crowd_skipped"] == 1


def test_json_path_and_explicit_image_dir(tmp_path: Path) -> None:
    _write(tmp_path, _base())
    ds = CocoDataset(tmp_path / "annotations.json", tmp_path / "images")
    assert ds.ann_file == tmp_path / "annotations.json" and len(ds[0]["boxes"]) == 2
    with pytest.raises(DataError, match="no annotations.json"):
        CocoDataset(tmp_path / "images")
