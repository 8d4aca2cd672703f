"""Checks a COCO `segmentation` value before pycocotools ever sees it.

pycocotools trusts its input: a NaN or huge polygon coordinate makes it allocate without bound (the machine runs
out of memory or the process dies with SIGSEGV), and an RLE whose `counts` do not decode to runs covering the
image makes `COCOeval` loop forever. So every segmentation is checked here, in pure Python and without
allocating the mask: polygons hold finite numbers, an even count >= 6 each, near the image; an RLE has the
image's size and `counts` that decode to non-negative runs summing to height * width.

`segmentation_problem` returns None for a valid value, else a sentence saying what is wrong and what was
expected; the caller adds the file, the annotation id and the field name. `segmentation_to_mask` decodes a value
that passed it (polygons, compressed or uncompressed RLE) into a bool mask.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Polygon points may lie a little outside their image (annotation tools round and overshoot); this far beyond
# it they are garbage, and pycocotools' rasteriser allocates memory in proportion to the distance.
POLYGON_MARGIN = 1.0  # in image sizes: x in [-1 * width, 2 * width], y likewise
# pycocotools decodes each compressed run with 32-bit shifts; 6 characters (30 bits, signed) stay exact. That is
# enough for any image up to 2**29 pixels (23170 x 23170), which is also the limit checked below.
_MAX_RUN_CHARS = 6
MAX_RLE_PIXELS = 2**29


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def polygon_problem(polygons: list, height: int, width: int) -> str | None:
    if not polygons:
        return ("is an empty list; expected at least one polygon [x1, y1, x2, y2, x3, y3, ...] or an RLE object "
                "{\"size\": [height, width], \"counts\": ...}")
    lo_x, hi_x = -POLYGON_MARGIN * width, (1 + POLYGON_MARGIN) * width
    lo_y, hi_y = -POLYGON_MARGIN * height, (1 + POLYGON_MARGIN) * height
    for k, poly in enumerate(polygons):
        if not isinstance(poly, list):
            return (f"polygon {k} is {_show(poly)} ({type(poly).__name__}); expected a list of numbers "
                    f"[x1, y1, x2, y2, x3, y3, ...]")
        if len(poly) < 6 or len(poly) % 2:
            return (f"polygon {k} has {len(poly)} numbers; expected an even count >= 6 (x, y of at least 3 "
                    f"points)")
        for j, v in enumerate(poly):
            if not _is_number(v):
                return f"polygon {k}, value {j} is {_show(v)}; expected a number"
            if not math.isfinite(v):
                return f"polygon {k}, value {j} is {v}; expected a finite number"
            lo, hi, axis = (lo_x, hi_x, "x") if j % 2 == 0 else (lo_y, hi_y, "y")
            if not lo <= v <= hi:
                return (f"polygon {k}, value {j} ({axis}={v}) lies far outside the {width}x{height} image; "
                        f"expected {axis} in [{lo:g}, {hi:g}]")
    return None


def decode_rle_counts(counts: str) -> np.ndarray | str:
    """The runs (int64) of a compressed COCO RLE string, as pycocotools' rleFrString decodes them, or a sentence on
    why it does not decode. Never trusts the string: characters, run lengths and the end of the string are all
    checked. Vectorised: evaluation checks every mask of every image with it."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        bad = next(k for k, ch in enumerate(counts) if ord(ch) > 127)
        return f"has character {counts[bad]!r} at position {bad}; expected only the COCO RLE characters '0'..'o'"
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    outside = np.flatnonzero((c < 0) | (c >= 64))
    if outside.size:
        pos = int(outside[0])
        return f"has character {counts[pos]!r} at position {pos}; expected only the COCO RLE characters '0'..'o'"
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    more = (c & 0x20) != 0
    if more[-1]:
        start = int(np.flatnonzero(~more[:-1])[-1]) + 1 if (~more[:-1]).any() else 0
        return f"ends inside a run (the run starting at character {start} is cut off)"
    ends = np.flatnonzero(~more)  # the last character of each run
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if (lengths > _MAX_RUN_CHARS).any():
        k = int(np.flatnonzero(lengths > _MAX_RUN_CHARS)[0])
        return f"has a run longer than {_MAX_RUN_CHARS} characters at position {int(starts[k])}"
    # Character j of a run contributes its low 5 bits shifted by 5 * j; the last one's bit 0x10 is the sign.
    offset = np.arange(c.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((c & 0x1F) << (5 * offset), starts)
    negative = (c[ends] & 0x10) != 0
    values = values - (negative.astype(np.int64) << (5 * lengths))
    # Runs after the first two are stored relative to the run two back: undo with a running sum per parity.
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def _runs_problem(runs: np.ndarray, height: int, width: int) -> str | None:
    negative = np.flatnonzero(runs < 0)
    if negative.size:
        k = int(negative[0])
        return f"run {k} has length {int(runs[k])}; expected run lengths >= 0"
    total = int(runs.sum())
    if total != height * width:
        return (f"runs cover {total} pixels; expected height * width = {height} * {width} = {height * width} "
                f"(is it the mask of another image?)")
    return None


def rle_problem(rle: dict, height: int, width: int, decode_counts: bool = True) -> str | None:
    missing = [k for k in ("size", "counts") if k not in rle]
    if missing:
        return (f"is an RLE object without {' and '.join(repr(k) for k in missing)}; expected "
                f"{{\"size\": [{height}, {width}], \"counts\": ...}}")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return f"has RLE 'size' {_show(size)}; expected [height, width] = [{height}, {width}]"
    if list(size) != [height, width]:
        return (f"has RLE 'size' {list(size)}; expected the image's [height, width] = [{height}, {width}] "
                f"(is it the mask of another image, or are the image's width/height wrong?)")
    if height * width > MAX_RLE_PIXELS:
        return f"is an RLE of a {width}x{height} image; RLE masks are read for images up to {MAX_RLE_PIXELS} pixels"
    counts = rle["counts"]
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "has RLE 'counts' bytes that are not ASCII; expected a COCO RLE string"
    if isinstance(counts, str):
        if not decode_counts:
            return None
        runs = decode_rle_counts(counts)
        if isinstance(runs, str):
            return f"has RLE 'counts' {_show(counts, 40)} that does not decode: it {runs}"
        problem = _runs_problem(runs, height, width)
        return None if problem is None else f"has RLE 'counts' that do not fit the image: {problem}"
    if isinstance(counts, list):  # uncompressed RLE (crowd regions)
        for k, r in enumerate(counts):
            if not (isinstance(r, int) and not isinstance(r, bool)):
                return f"has uncompressed RLE 'counts' with entry {k} = {_show(r)}; expected integers"
            if not 0 <= r <= height * width:  # pycocotools stores them as uint32
                return (f"has uncompressed RLE 'counts' that do not fit the image: run {k} has length {r}; "
                        f"expected run lengths in 0..{height * width}")
        problem = _runs_problem(np.asarray(counts, dtype=np.int64), height, width)
        return None if problem is None else f"has uncompressed RLE 'counts' that do not fit the image: {problem}"
    return (f"has RLE 'counts' of type {type(counts).__name__}; expected a string (compressed RLE) or a list "
            f"of run lengths (uncompressed RLE)")


def segmentation_problem(seg: Any, height: int, width: int, decode_counts: bool = True) -> str | None:
    """None when pycocotools can safely turn `seg` into a height x width mask; else what is wrong.

    `decode_counts=False` skips decoding compressed RLE strings (the costly part) for masks this package encoded
    itself, such as a predictor's results; their structure and size are still checked."""
    if isinstance(seg, list):
        return polygon_problem(seg, height, width)
    if isinstance(seg, dict):
        return rle_problem(seg, height, width, decode_counts)
    return (f"is {_show(seg)} ({type(seg).__name__}); expected a list of polygons [[x1, y1, x2, y2, ...], ...] "
            f"or an RLE object {{\"size\": [{height}, {width}], \"counts\": ...}}")


def segmentation_to_mask(seg: Any, height: int, width: int) -> np.ndarray:
    """bool (height, width) mask of a segmentation that `segmentation_problem` accepted: polygons (merged),
    uncompressed RLE (`counts` a list) or compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = dict(seg)
    return mask_utils.decode(rle).astype(bool)
