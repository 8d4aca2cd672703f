"""The image <-> graph contract in one place: input sizes, padding and pasting masks back (numpy only).

Every stage that turns an image into graph input or graph output into per-pixel masks uses these rules:
training and evaluation (``boxseg.train``, ``boxseg.eval``), the exporter's verification images
(``boxseg.export.images``), the latency backends (``boxseg.bench.backends``) and the runtime's numpy reference
(``boxseg.runtime.reference``, which the C++ core is tested against). Imports numpy and the standard library
only, so the torch-free runtime can use it (docs/contracts.md, "Exported ONNX graph").

Resize. scale = min(min_size / shorter side, max_size / longer side), each term only when its size is > 0
(both 0: no resize); new size = floor(size * scale + 0.5), at least 1 -- halves round up, never to even.

Padding. Bottom/right with zeros to the batch's largest size rounded up to a multiple of ``SIZE_DIVISOR``.

Masks. The graph's mask grid (H / stride, W / stride) covers the padded input, cell j centred at input pixel
(j + 0.5) * stride - 0.5. Original pixel x (centre x + 0.5) lies at (x + 0.5) * scale_x input pixels, so it
samples the mask grid at (x + 0.5) * scale_x / stride - 0.5, bilinearly (PyTorch's align_corners=False: clamped
at 0, the last cell repeated past the end; rows first, then columns). A detection's mask is sampled only for the
pixels its box (original pixels, clipped to the image) touches: columns floor(x0) .. ceil(x1) - 1, rows likewise;
none for a box of zero width or height. Foreground: probability > threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SIZE_DIVISOR = 32  # graph input H and W are multiples of this (`boxseg.size_divisor`)
MASK_STRIDE = 4  # input pixels per mask-grid cell (`boxseg.mask_stride`)
MASK_THRESHOLD = 0.5  # foreground probability when a model does not say (`boxseg.mask_threshold`)
# The graph's outputs, in order: boxes (B, D, 4) xyxy input pixels, scores (B, D), classes (B, D), masks
# (B, D, H / stride, W / stride) probabilities, num_dets (B,) valid rows per image (docs/contracts.md).
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks", "num_dets")


# ---------------------------------------------------------------------------------------------- sizes


def scaled_dims(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) * scale, rounded half up, at least 1 pixel each."""
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def plan_resize(height: int, width: int, min_size: int = 0, max_size: int = 0) -> tuple[int, int]:
    """Resized (height, width) keeping the aspect ratio: the shorter side ``min_size``, the longer side at most
    ``max_size`` (either 0: that limit is off; both 0: no resize)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size ({height} x {width})")
    if min_size <= 0 and max_size <= 0:
        return height, width
    scale = math.inf
    if min_size > 0:
        scale = min_size / min(height, width)
    if max_size > 0:
        scale = min(scale, max_size / max(height, width))
    return scaled_dims(height, width, scale)


def fit_size(height: int, width: int, box: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """The resized (h, w) of an image fitted inside ``box`` = (H, W) keeping its aspect ratio, and the scale."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size ({height} x {width})")
    scale = min(box[0] / height, box[1] / width)
    return scaled_dims(height, width, scale), scale


def pad_to(size: int, divisor: int = SIZE_DIVISOR) -> int:
    """``size`` rounded up to a multiple of ``divisor``."""
    d = max(1, int(divisor))
    return -(-int(size) // d) * d


def padded_size(sizes: Sequence[tuple[int, int]], size_divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    """Largest (h, w) in ``sizes``, each rounded up to a multiple of ``size_divisor``."""
    return pad_to(max(s[0] for s in sizes), size_divisor), pad_to(max(s[1] for s in sizes), size_divisor)


# ---------------------------------------------------------------------------------------------- masks


def axis_taps(
    n_dst: int, src_per_dst: float, n_src: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (i0, i1, weight of i1) for destination indices start .. start + n_dst - 1 (module docstring)."""
    src = (np.arange(start, start + n_dst, dtype=np.float64) + 0.5) * src_per_dst - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    w1 = src - i0
    last = i0 >= n_src - 1
    i0 = np.where(last, n_src - 1, i0)
    i1 = np.where(last, n_src - 1, i0 + 1)
    w1 = np.where(last, 0.0, w1)
    return i0, i1, w1


def rescale_boxes(boxes: np.ndarray, scale_y: float, scale_x: float, height: int, width: int) -> np.ndarray:
    """(n, 4) xyxy input pixels -> original pixels (divided by the resize scale), clipped to the image, float32."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([scale_x, scale_y, scale_x, scale_y])
    b = np.nan_to_num(b, nan=0.0)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b.astype(np.float32)


def box_pixels(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Columns [x0, x1) and rows [y0, y1) of the pixels an (original-pixel) box touches; none when the box
    has zero width or height."""
    if not (box[2] > box[0] and box[3] > box[1]):
        return 0, 0, 0, 0
    x0 = int(np.clip(math.floor(box[0]), 0, width))
    x1 = int(np.clip(math.ceil(box[2]), 0, width))
    y0 = int(np.clip(math.floor(box[1]), 0, height))
    y1 = int(np.clip(math.ceil(box[3]), 0, height))
    return x0, x1, y0, y1


def paste_mask(
    mask: np.ndarray,
    box: np.ndarray,
    height: int,
    width: int,
    scale_y: float,
    scale_x: float,
    stride: int = MASK_STRIDE,
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """Low-resolution probabilities (mh, mw) -> bool (height, width), sampled only inside ``box`` (original
    pixels, as :func:`rescale_boxes` gives); the cost is the box's area."""
    out = np.zeros((height, width), dtype=bool)
    x0, x1, y0, y1 = box_pixels(box, height, width)
    if x1 <= x0 or y1 <= y0:
        return out
    m = np.asarray(mask, dtype=np.float64)
    mh, mw = m.shape
    r0, r1, wy = axis_taps(y1 - y0, scale_y / stride, mh, start=y0)
    c0, c1, wx = axis_taps(x1 - x0, scale_x / stride, mw, start=x0)
    rows = m[r0] * (1 - wy[:, None]) + m[r1] * wy[:, None]
    values = rows[:, c0] * (1 - wx) + rows[:, c1] * wx
    out[y0:y1, x0:x1] = values > threshold
    return out


def paste_masks(
    masks: np.ndarray,
    boxes: np.ndarray,
    original_hw: tuple[int, int],
    resized_hw: tuple[int, int],
    stride: int = MASK_STRIDE,
    threshold: float = MASK_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections: masks (n, mh, mw) and boxes (n, 4) in the graph-input frame, where the original
    image of ``original_hw`` was resized to ``resized_hw`` before padding -> (boxes (n, 4) float32 in original
    pixels, clipped; masks bool (n, H, W))."""
    h, w = int(original_hw[0]), int(original_hw[1])
    sy, sx = resized_hw[0] / h, resized_hw[1] / w
    out_boxes = rescale_boxes(boxes, sy, sx, h, w)
    out = np.zeros((len(out_boxes), h, w), dtype=bool)
    for k in range(len(out_boxes)):
        out[k] = paste_mask(masks[k], out_boxes[k], h, w, sy, sx, stride, threshold)
    return out_boxes, out
