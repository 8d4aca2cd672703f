"""One image reader (`boxseg.data.images`): the dataset, `boxseg predict` and the exporter's calibration and
verification images decode a file to the same pixels, and each words a bad file for its own user."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from boxseg.export.errors import ExportError
from boxseg.export.images import read_rgb as export_read_rgb
from PIL import Image

from boxseg.data.coco import CocoDataset
from boxseg.data.errors import DataError
from boxseg.data.images import read_rgb, read_size
from boxseg.eval.predict_folder import read_image as predict_read_image

H, W = 12, 20


def _gradient16() -> Image.Image:
    # 16-bit grey over the whole 0..65535 range: Pillow's convert("RGB") clips it to mostly white, which is what
    # the exporter's own reader used to do while training saw the scaled-down image.
    return Image.fromarray((np.arange(H * W).reshape(H, W) * (65535 // (H * W - 1))).astype(np.uint16))


def _rotated() -> tuple[Image.Image, Image.Exif]:
    stored = np.zeros((W, H, 3), np.uint8)  # stored W x H, EXIF 6 displays it H x W
    stored[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    return Image.fromarray(stored), exif


def _image(kind: str) -> tuple[Image.Image, dict]:
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    if kind == "rgb":
        return Image.fromarray(rgb), {}
    if kind == "palette":
        return Image.fromarray(rgb).convert("P"), {}
    if kind == "rgba":
        return Image.fromarray(np.dstack([rgb, np.full((H, W), 90, np.uint8)])), {}
    if kind == "grey16":
        return _gradient16(), {}
    img, exif = _rotated()
    return img, {"exif": exif}


@pytest.mark.parametrize("kind", ["rgb", "palette", "rgba", "grey16", "exif_rotated"])
def test_dataset_predict_and_export_read_the_same_pixels(tmp_path: Path, kind: str) -> None:
    img, save_kw = _image(kind)
    (tmp_path / "images").mkdir()
    path = tmp_path / "images" / "a.png"
    img.save(path, **save_kw)
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "thing"}], "annotations": []}))

    expected = read_rgb(path)
    assert expected.dtype == np.uint8 and expected.shape == (H, W, 3)
    assert read_size(path) == (W, H)
    np.testing.assert_array_equal(CocoDataset(tmp_path).load_image(0), expected)
    np.testing.assert_array_equal(predict_read_image(path), expected)
    np.testing.assert_array_equal(export_read_rgb(path), expected)
    if kind == "grey16":  # scaled, not clipped: the mean grey stays near the middle
        assert 100 < expected.mean() < 155
    if kind == "exif_rotated":
        assert tuple(expected[0, W - 1]) == (255, 0, 0)


def test_each_caller_words_an_unreadable_file_for_its_user(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    bad = tmp_path / "images" / "a.png"
    bad.write_text("not an image")
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "thing"}], "annotations": []}))
    with pytest.raises(DataError, match="cannot read image"):
        CocoDataset(tmp_path).load_image(0)
    with pytest.raises(OSError, match="cannot read this image"):
        predict_read_image(bad)
    with pytest.raises(ExportError, match="cannot read image"):
        export_read_rgb(bad)
