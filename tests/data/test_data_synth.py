"""Synthetic generator: determinism, exact masks, occlusion, COCO validity, shape rasterisation vs references."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image
from pycocotools import mask as mask_utils

from boxseg.data.shapes import (
    CATEGORY_NAMES,
    Shape,
    crop_to_image,
    normalised_coords,
    rasterize,
    sample_shape,
)
from boxseg.data.synth import (
    MIN_VISIBLE_AREA,
    MIN_VISIBLE_FRACTION,
    generate_bench,
    generate_dataset,
    layout,
    render_image,
)

SIZE = (128, 160)  # small and non-square, to catch H/W swaps


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_output(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", num_images=6, seed=3, size=SIZE, split="hard", progress=False)
    generate_dataset(tmp_path / "b", num_images=6, seed=3, size=SIZE, split="hard", progress=False)
    generate_dataset(tmp_path / "c", num_images=6, seed=4, size=SIZE, split="hard", progress=False)
    da, db, dc = (_tree_digest(tmp_path / n) for n in "abc")
    assert len(da) == 7 and da == db
    assert da["annotations.json"] != dc["annotations.json"]
    assert a["images"] == 6 and a["instances"] > 6


def test_rerun_into_the_same_folder_matches_a_fresh_run(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", num_images=5, seed=3, size=SIZE, progress=False)
    (tmp_path / "a" / "images" / "notes.txt").write_text("user file")
    generate_dataset(tmp_path / "a", num_images=2, seed=3, size=SIZE, progress=False)
    generate_dataset(tmp_path / "b", num_images=2, seed=3, size=SIZE, progress=False)
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert a.pop("images/notes.txt") and a == b  # stale numbered PNGs gone, other files untouched


def test_images_do_not_depend_on_order_or_count(tmp_path: Path) -> None:
    # One random stream per image: a 3-image run is the prefix of a 5-image run, and image 4 rendered alone
    # equals image 4 of the run.
    generate_dataset(tmp_path / "five", num_images=5, seed=11, size=SIZE, progress=False)
    generate_dataset(tmp_path / "three", num_images=3, seed=11, size=SIZE, progress=False)
    five, three = _tree_digest(tmp_path / "five"), _tree_digest(tmp_path / "three")
    assert all(five[k] == v for k, v in three.items() if k.startswith("images/"))
    alone = render_image(4, seed=11, size=SIZE)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "five" / "images" / "000004.png")), alone.image)
    assert not np.array_equal(alone.image, render_image(3, seed=11, size=SIZE).image)


def test_parallel_workers_give_identical_bytes(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "one", num_images=4, seed=5, size=SIZE, progress=False)
    generate_dataset(tmp_path / "two", num_images=4, seed=5, size=SIZE, progress=False, workers=2)
    assert _tree_digest(tmp_path / "one") == _tree_digest(tmp_path / "two")


def test_annotations_are_valid_coco_with_exact_area_and_tight_box(tmp_path: Path) -> None:
    generate_dataset(tmp_path, num_images=8, seed=1, size=SIZE, progress=False)
    text = (tmp_path / "annotations.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"  # fixed formatting
    assert [c["name"] for c in data["categories"]] == list(CATEGORY_NAMES)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for im in data["images"]:
        assert (tmp_path / "images" / im["file_name"]).is_file()
        assert (im["height"], im["width"]) == SIZE
    for a in data["annotations"]:
        assert isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        assert m.shape == SIZE
        assert a["area"] == int(m.sum()) >= MIN_VISIBLE_AREA
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert a["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_occlusion_is_exact(seed: int) -> None:
    # Reference: re-rasterise every shape from its parameters alone, paint indices back to front, and compare the
    # front-most label map with the generator's visible masks.
    for index in range(4):
        sample = render_image(index, seed=seed, size=SIZE)
        label = np.full(SIZE, -1)
        for k, obj in enumerate(sample.objects):
            y0, x0, full = rasterize(obj.shape)
            ya, xa, m = crop_to_image(y0, x0, full, *SIZE)
            label[ya : ya + m.shape[0], xa : xa + m.shape[1]][m] = k
            assert obj.full_area == int(full.sum())
        for k, obj in enumerate(sample.objects):
            np.testing.assert_array_equal(obj.visible, label == k)
            # Covered beyond the threshold means dropped, so every kept object shows enough of itself.
            assert obj.visible.sum() >= MIN_VISIBLE_FRACTION * obj.full_area
        assert 1 <= len(sample.objects) <= 8


def test_objects_are_painted_where_their_masks_say() -> None:
    # Easy split: inside a visible mask the pixels differ from what the background alone would show there.
    sample = render_image(2, seed=0, size=SIZE)
    union = np.zeros(SIZE, dtype=bool)
    for obj in sample.objects:
        union |= obj.visible
    assert union.any() and not union.all()
    img = sample.image.astype(np.float32)
    bg_mean = img[~union].mean(axis=0)
    for obj in sample.objects:
        inside = img[obj.visible].mean(axis=0)
        assert np.linalg.norm(inside - bg_mean) > 40  # easy colours are >= 110 apart, textures blur it a bit


def test_hard_split_shares_layout_but_not_pixels(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "e", num_images=3, seed=2, size=SIZE, split="easy", progress=False)
    generate_dataset(tmp_path / "h", num_images=3, seed=2, size=SIZE, split="hard", progress=False)
    e = json.loads((tmp_path / "e" / "annotations.json").read_text())
    h = json.loads((tmp_path / "h" / "annotations.json").read_text())
    assert e["annotations"] == h["annotations"]
    ie, ih = render_image(0, seed=2, size=SIZE), render_image(0, seed=2, size=SIZE, split="hard")
    assert not np.array_equal(ie.image, ih.image)

    # Hard objects are close to the background: the object/background colour gap is smaller than in easy.
    def gap(s):  # mean colour distance between each object and the background
        union = np.any([o.visible for o in s.objects], axis=0)
        bg = s.image[~union].astype(float).mean(0)
        return np.mean([np.linalg.norm(s.image[o.visible].astype(float).mean(0) - bg) for o in s.objects])

    assert gap(ih) < gap(ie)


def test_bench_preset_layout(tmp_path: Path) -> None:
    s = generate_bench(tmp_path, seed=0, size=(64, 64), num_train=3, num_val=2, progress=False)
    assert s["subsets"]["train"]["images"] == 3 and s["subsets"]["val"]["images"] == 2
    train = json.loads((tmp_path / "train" / "annotations.json").read_text())
    val = json.loads((tmp_path / "val" / "annotations.json").read_text())
    # train and val draw from different random streams: no shared image.
    assert train["annotations"][0]["segmentation"] != val["annotations"][0]["segmentation"]


def test_object_sizes_span_coco_ranges() -> None:
    areas = []
    for i in range(30):
        areas += [int(o.visible.sum()) for o in layout(0, 0, i, 320, 320)]  # geometry only: fast
    areas = np.asarray(areas)
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()


# --- shape rasterisation against independent references ----------------------------------------------------------
def _centres(shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y0, x0, m = rasterize(shape)
    u, v = normalised_coords(shape, y0, x0, y0 + m.shape[0], x0 + m.shape[1])
    return m, u, v


@pytest.mark.parametrize("seed", range(6))
def test_star_matches_matplotlib_polygon_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = sample_shape(rng, "star", 40.3, 37.8, 30.0)
    m, u, v = _centres(shape)
    ref = MplPath(np.asarray(shape.params)).contains_points(np.stack([u.ravel(), v.ravel()], 1)).reshape(m.shape)
    # Pixels exactly on an edge may go either way in the two tests; allow a handful.
    assert (m != ref).sum() <= 3 and m.sum() > 100


@pytest.mark.parametrize("seed", range(3))
def test_ellipse_and_ring_match_closed_form(seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = sample_shape(rng, "ellipse", 30.0, 25.0, 20.0)
    m, u, v = _centres(e)
    np.testing.assert_array_equal(m, u**2 + v**2 <= 1)
    # Ellipse area close to pi * a * b.
    assert abs(m.sum() - np.pi * 20 * 20 * e.aspect) < 0.05 * m.sum()
    r = sample_shape(rng, "ring", 30.0, 25.0, 20.0)
    m, u, v = _centres(r)
    hx, hy, hr = r.params
    np.testing.assert_array_equal(m, (u**2 + v**2 <= 1) & ((u - hx) ** 2 + (v - hy) ** 2 > hr**2))
    assert not m[m.shape[0] // 2].all()  # the hole shows through the middle row


def test_blob_matches_its_radius_function() -> None:
    rng = np.random.default_rng(0)
    b = sample_shape(rng, "blob", 30.0, 30.0, 25.0)
    m, u, v = _centres(b)
    table = np.asarray(b.params)
    phi = np.arctan2(v, u) % (2 * np.pi)
    ref = np.hypot(u, v) <= table[np.minimum((phi / (2 * np.pi) * len(table)).astype(int), len(table) - 1)]
    assert (m != ref).sum() <= 2  # only float ties at the boundary
    assert table.max() == pytest.approx(1.0) and table.min() > 0.3
