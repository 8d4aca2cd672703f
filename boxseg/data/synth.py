"""Deterministic procedural COCO instance-segmentation data with exact masks.

Layout of a dataset folder: ``DIR/annotations.json`` + ``DIR/images/000000.png ...``. Each image draws from its own
random streams, keyed by (seed, subset, image index, stream), so images can be generated in any order or in
parallel with identical bytes. Geometry and appearance use separate streams: the easy and hard splits of the same
seed share every layout and annotation and differ only in colours, texture contrast and camera artefacts.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from boxseg.data.shapes import CATEGORY_NAMES, Shape, crop_to_image, rasterize, sample_shape
from boxseg.data.textures import background, degrade, easy_colours, hard_colours, object_texture
from boxseg.tempfiles import write_atomic

SYNTH_VERSION = 1
SPLITS = ("easy", "hard")
MIN_VISIBLE_FRACTION = 0.3  # of the object's full area (occlusion and image border both count)
MIN_VISIBLE_AREA = 20  # pixels
OBJECTS_PER_IMAGE = (2, 8)
SIDE_RANGE_320 = (12.0, 200.0)  # object side range (px) for a 320-px image; scaled with min(H, W)
PLACEMENT_TRIES = 30
# Random-stream keys: the plain dataset and the two bench subsets never share images.
SUBSETS = {"all": 0, "train": 1, "val": 2}
BENCH_SIZES = {"train": 600, "val": 150}
_GEOMETRY, _APPEARANCE = 0, 1


@dataclass
class SynthObject:
    shape: Shape
    category_id: int  # 1-based COCO id (index into CATEGORY_NAMES + 1)
    visible: np.ndarray  # bool (H, W): the pixels this object shows in the final image
    full_area: int  # pixel count of the whole shape, including parts hidden or outside the image
    origin: tuple[int, int]  # (y, x) of `crop` in the image
    crop: np.ndarray  # bool: the whole shape clipped to the image (what gets painted), at `origin`


@dataclass
class SynthImage:
    image: np.ndarray  # uint8 (H, W, 3)
    objects: list[SynthObject]  # back to front


def categories() -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CATEGORY_NAMES)]


def _rng(seed: int, subset: int, index: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(subset, index, stream))))


def layout(seed: int, subset: int, index: int, height: int, width: int) -> list[SynthObject]:
    """Place 2..8 shapes front over back, resampling any placement that would hide an earlier object too much."""
    rng = _rng(seed, subset, index, _GEOMETRY)
    scale = min(height, width) / 320.0
    lo, hi = np.log(SIDE_RANGE_320[0] * scale), np.log(SIDE_RANGE_320[1] * scale)
    objects: list[SynthObject] = []
    visible_counts: list[int] = []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        for _try in range(PLACEMENT_TRIES):
            cat = int(rng.integers(len(CATEGORY_NAMES)))
            radius = float(np.exp(rng.uniform(lo, hi))) / 2
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            shape = sample_shape(rng, CATEGORY_NAMES[cat], cx, cy, radius)
            y0, x0, full = rasterize(shape)
            full_area = int(full.sum())
            ya, xa, m = crop_to_image(y0, x0, full, height, width)
            own = int(m.sum())
            if own < max(MIN_VISIBLE_FRACTION * full_area, MIN_VISIBLE_AREA):
                continue
            win = (slice(ya, ya + m.shape[0]), slice(xa, xa + m.shape[1]))
            remaining = [c - int((o.visible[win] & m).sum()) for o, c in zip(objects, visible_counts)]
            if any(r < max(MIN_VISIBLE_FRACTION * o.full_area, MIN_VISIBLE_AREA)
                   for r, o in zip(remaining, objects)):
                continue
            for o in objects:
                o.visible[win] &= ~m
            visible_counts[:] = remaining
            vis = np.zeros((height, width), dtype=bool)
            vis[win] = m
            objects.append(SynthObject(shape, cat + 1, vis, full_area, (ya, xa), m))
            visible_counts.append(own)
            break
    return objects


def render_image(
    index: int, *, seed: int = 0, split: str = "easy", size: tuple[int, int] = (320, 320), subset: int = 0
) -> SynthImage:
    """Render one image and its exact visible masks; pure function of the arguments."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    height, width = size
    objects = layout(seed, subset, index, height, width)
    rng = _rng(seed, subset, index, _APPEARANCE)
    if split == "easy":
        bg_col, colours = easy_colours(rng, len(objects))
        img = background(rng, height, width, bg_col + 0.5, amplitude=28.0)
        amps = rng.uniform(10, 30, size=len(objects))
    else:
        bg_col, colours = hard_colours(rng, len(objects))
        img = background(rng, height, width, bg_col + 0.5, amplitude=22.0)
        amps = rng.uniform(8, 20, size=len(objects))
    # Channel-first float image; +0.5 in every base colour makes the final truncation to uint8 a rounding.
    for obj, col, amp in zip(objects, colours, amps):
        (ya, xa), m = obj.origin, obj.crop
        tex = object_texture(rng, m.shape[0], m.shape[1], col + 0.5, float(amp))
        region = img[:, ya : ya + m.shape[0], xa : xa + m.shape[1]]
        region[:, m] = tex[:, m]
    np.clip(img, 0, 255, out=img)
    out = np.empty((height, width, 3), dtype=np.uint8)
    for c in range(3):  # per-channel copies interleave far faster than a transposed astype
        out[..., c] = img[c]
    if split == "hard":
        out = degrade(rng, out)
    return SynthImage(out, objects)


def coco_annotation(obj: SynthObject) -> dict:
    """COCO fields of one object from its visible mask (no ids): tight bbox, area, RLE with str counts."""
    vis = obj.visible
    (ya, xa), (h, w) = obj.origin, obj.crop.shape
    win = vis[ya : ya + h, xa : xa + w]  # the visible pixels all lie in the shape's own window
    rows, cols = np.flatnonzero(win.any(axis=1)), np.flatnonzero(win.any(axis=0))
    x0, y0 = xa + int(cols[0]), ya + int(rows[0])
    rle = mask_utils.encode(np.asfortranarray(vis.view(np.uint8)))
    return {
        "category_id": obj.category_id,
        "bbox": [x0, y0, xa + int(cols[-1]) - x0 + 1, ya + int(rows[-1]) - y0 + 1],
        "area": int(np.count_nonzero(win)),
        "segmentation": {"size": [int(vis.shape[0]), int(vis.shape[1])], "counts": rle["counts"].decode("ascii")},
        "iscrowd": 0,
    }


def _write_png(image: np.ndarray, path: str) -> None:
    # Fixed PNG settings (no metadata, fixed compression) so the bytes depend only on the pixels.
    Image.fromarray(image).save(path, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)


def _render_one(args: tuple[int, int, str, tuple[int, int], int, str]) -> tuple[dict, list[dict], np.ndarray]:
    index, seed, split, size, subset, _ = args
    sample = render_image(index, seed=seed, split=split, size=size, subset=subset)
    info = {"id": index + 1, "file_name": f"{index:06d}.png", "height": size[0], "width": size[1]}
    return info, [coco_annotation(o) for o in sample.objects], sample.image


def _make_one(args: tuple[int, int, str, tuple[int, int], int, str]) -> tuple[dict, list[dict]]:
    info, anns, image = _render_one(args)
    _write_png(image, os.path.join(args[5], info["file_name"]))
    return info, anns


def _remove_stale_images(image_dir: Path, num_images: int) -> None:
    # A rerun with fewer images into the same folder must leave the same files as a fresh run: delete our own
    # numbered PNGs beyond the new count (and nothing else).
    for p in image_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        if int(p.stem) >= num_images:
            p.unlink()


def generate_dataset(
    out_dir: str | Path,
    *,
    num_images: int = 64,
    split: str = "easy",
    seed: int = 0,
    size: tuple[int, int] = (320, 320),
    subset: str = "all",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write ``out_dir/annotations.json`` and ``out_dir/images/*.png``; return a summary dict."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {tuple(SUBSETS)}, got {subset!r}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if min(size) < 32:
        raise ValueError(f"size must be at least 32x32 pixels, got {size[0]}x{size[1]}")
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(i, seed, split, (int(size[0]), int(size[1])), SUBSETS[subset], str(image_dir))
            for i in range(num_images)]
    t0 = time.perf_counter()
    bar = tqdm(total=num_images, desc=f"synth {out.name or out}", unit="img", file=sys.stderr,
               disable=not progress, leave=False)
    results: list[tuple[dict, list[dict]]] = []
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for r in pool.map(_make_one, jobs, chunksize=8):
                results.append(r)
                bar.update()
    else:
        # PNG encoding releases the GIL: one writer thread overlaps it with rendering the next image.
        with ThreadPoolExecutor(1) as writer:
            pending: deque[Future] = deque()
            for job in jobs:
                info, anns, image = _render_one(job)
                pending.append(writer.submit(_write_png, image, str(image_dir / info["file_name"])))
                results.append((info, anns))
                while len(pending) > 4 or (pending and pending[0].done()):
                    pending.popleft().result()
                    bar.update()
            while pending:
                pending.popleft().result()
                bar.update()
    bar.close()
    images, annotations = [], []
    for info, anns in results:
        images.append(info)
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": info["id"], **a})
    dataset = {
        "info": {"description": "BoxSeg synthetic shapes", "version": SYNTH_VERSION, "split": split,
                 "seed": seed, "subset": subset},
        "licenses": [],
        "categories": categories(),
        "images": images,
        "annotations": annotations,
    }
    write_atomic(out / "annotations.json", json.dumps(dataset, sort_keys=True, separators=(",", ":")) + "\n")
    _remove_stale_images(image_dir, num_images)
    seconds = time.perf_counter() - t0
    per_cat = {c["name"]: 0 for c in dataset["categories"]}
    for a in annotations:
        per_cat[CATEGORY_NAMES[a["category_id"] - 1]] += 1
    return {
        "out": str(out), "split": split, "seed": seed, "subset": subset, "size": [int(size[0]), int(size[1])],
        "images": len(images), "instances": len(annotations), "per_category": per_cat,
        "seconds": round(seconds, 3), "images_per_s": round(len(images) / max(seconds, 1e-9), 1),
    }


def generate_bench(
    out_root: str | Path,
    *,
    split: str = "easy",
    seed: int = 0,
    size: tuple[int, int] = (320, 320),
    num_train: int = BENCH_SIZES["train"],
    num_val: int = BENCH_SIZES["val"],
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """The fixed benchmark split: ``out_root/train`` and ``out_root/val``, each a dataset folder."""
    root = Path(out_root)
    subsets = {
        name: generate_dataset(root / name, num_images=n, split=split, seed=seed, size=size, subset=name,
                               workers=workers, progress=progress)
        for name, n in (("train", num_train), ("val", num_val))
    }
    return {"out": str(root), "preset": "bench", "split": split, "seed": seed, "subsets": subsets}
