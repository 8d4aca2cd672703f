"""Helpers of the hostile-input suite (a unique module name: tests/ folders are not packages).

Inputs that once made pycocotools run out of memory or loop forever are run in a child process with an
address-space limit and a timeout: if a regression lets them through again, the test fails within seconds
instead of taking the machine down.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

H, W = 24, 32
CHILD_MEMORY = 2 * 1024**3  # bytes of address space: plenty for numpy + pycocotools, far below the machine's
CHILD_TIMEOUT = 120  # seconds: a clean run takes about one; a regression (hang) is cut off here


def rle_of(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode()}


def valid_coco() -> dict:
    """Two images, two categories; a polygon, a compressed RLE and an uncompressed-RLE crowd region."""
    block = np.zeros((H, W), bool)
    block[2:6, 3:9] = True
    crowd = np.zeros((H, W), np.uint8)
    crowd[10:20, 20:30] = 1
    flat = crowd.flatten(order="F")
    runs, current, count = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    return {
        "images": [{"id": 7, "file_name": "a.png", "width": W, "height": H},
                   {"id": 9, "file_name": "b.png", "width": W, "height": H}],
        "categories": [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [3, 2, 6, 4], "iscrowd": 0,
             "segmentation": rle_of(block)},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [10, 10, 5, 5], "iscrowd": 0,
             "segmentation": [[10, 10, 15, 10, 15, 15, 10, 15]]},
            {"id": 3, "image_id": 9, "category_id": 2, "bbox": [20, 10, 10, 10], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": runs}},
        ],
    }


def write_dataset(root: Path, data: dict, images: bool = True, sizes: dict[str, tuple[int, int]] | None = None
                  ) -> Path:
    """root/annotations.json (NaN written as the bare NaN token, as Python's json does) and root/images/*.png.

    `sizes` overrides an image file's real (width, height), to disagree with the JSON."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps(data))
    if images:
        for im in data["images"]:
            w, h = (sizes or {}).get(im["file_name"], (im["width"], im["height"]))
            Image.new("RGB", (w, h), (90, 120, 150)).save(root / "images" / im["file_name"])
    return root


def limit_memory() -> None:
    # preexec_fn: runs in the child before exec, so the limit binds the child only.
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_limited(args: list[str], timeout: float = CHILD_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run `args` with the memory limit and the timeout; a timeout fails the test as a hang."""
    try:
        return subprocess.run(args, preexec_fn=limit_memory, capture_output=True, text=True, timeout=timeout,
                              check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"hang: {' '.join(args)} did not finish in {timeout} s") from exc


def boxseg_limited(*args: str, timeout: float = CHILD_TIMEOUT) -> subprocess.CompletedProcess:
    """The `boxseg` command line in a limited child process."""
    return run_limited([sys.executable, "-c", "from boxseg.cli import main; main()", *args], timeout=timeout)


def python_limited(code: str, timeout: float = CHILD_TIMEOUT) -> subprocess.CompletedProcess:
    return run_limited([sys.executable, "-c", code], timeout=timeout)
