"""Pure-numpy reference of the runtime's pre- and post-processing; the C++ core is tested against it.

Conventions (the C++ core implements exactly these):

Resize. `plan_resize`: scale = min(min_size / shorter side, max_size / longer side), each term only when its
size is > 0 (both 0: no resize); new size = floor(size * scale + 0.5), at least 1. Per-axis scales are
new/original, so scale_y = new_h / h and scale_x = new_w / w exactly.

Bilinear sampling (resize and mask paste alike; PyTorch's align_corners=False): destination pixel i has its
centre at i + 0.5; it reads the source at s = (i + 0.5) * (source pixels per destination pixel) - 0.5, with
source pixel centres at integers; s < 0 is clamped to 0; i0 = floor(s), i1 = i0 + 1, weight of i1 = s - i0;
at or past the last source pixel both taps are the last pixel. Interpolate rows first, then columns.

Batch. Images are resized, then padded at the bottom/right with 0 to the largest size in the batch rounded up
to a multiple of `size_divisor`; layout (B, 3, H, W) RGB; float32 0..255 (or (x - mean) / std when the graph
wants normalised input, or uint8 rounded half up).

Masks. The graph's mask grid (H / stride, W / stride) covers the padded input, cell j centred at input pixel
(j + 0.5) * stride - 0.5. Original pixel x (centre x + 0.5) lies at (x + 0.5) * scale_x input pixels, so it
samples the mask grid at (x + 0.5) * scale_x / stride - 0.5. A detection's mask is sampled only for the pixels
its box touches in the original image (columns floor(x0) .. ceil(x1) - 1, rows likewise, clipped; none for a
box of zero width or height); every pixel outside is background. Foreground: probability > threshold.

Boxes. Input pixels / scale, clipped to [0, W] x [0, H].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def plan_resize(height: int, width: int, min_size: int = 0, max_size: int = 0) -> tuple[int, int]:
    """Resized (height, width) keeping the aspect ratio."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size ({height} x {width})")
    if min_size <= 0 and max_size <= 0:
        return height, width
    scale = math.inf
    if min_size > 0:
        scale = min_size / min(height, width)
    if max_size > 0:
        scale = min(scale, max_size / max(height, width))
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def padded_size(sizes: Sequence[tuple[int, int]], size_divisor: int) -> tuple[int, int]:
    """Largest (h, w) in `sizes`, each rounded up to a multiple of size_divisor."""
    d = max(1, size_divisor)
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    return -(-h // d) * d, -(-w // d) * d


def axis_taps(
    n_dst: int, src_per_dst: float, n_src: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w1) for destination indices start .. start + n_dst - 1 (see the module docstring)."""
    src = (np.arange(start, start + n_dst, dtype=np.float64) + 0.5) * src_per_dst - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    w1 = src - i0
    last = i0 >= n_src - 1
    i0 = np.where(last, n_src - 1, i0)
    i1 = np.where(last, n_src - 1, i0 + 1)
    w1 = np.where(last, 0.0, w1)
    return i0, i1, w1


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(H, W, C) image -> (out_h, out_w, C) float64."""
    h, w = image.shape[:2]
    src = image.astype(np.float64)
    if (out_h, out_w) == (h, w):
        return src
    y0, y1, wy = axis_taps(out_h, h / out_h, h)
    x0, x1, wx = axis_taps(out_w, w / out_w, w)
    wx = wx[None, :, None]
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    return top * (1 - wy[:, None, None]) + bottom * wy[:, None, None]


def preprocess(
    images: Sequence[np.ndarray],
    min_size: int = 0,
    max_size: int = 0,
    size_divisor: int = 32,
    input_type: str = "float32",
    normalize: bool = False,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """uint8 (H, W, 3) images -> the (B, 3, H, W) graph input and each image's resized (h, w)."""
    sizes = [plan_resize(im.shape[0], im.shape[1], min_size, max_size) for im in images]
    ph, pw = padded_size(sizes, size_divisor)
    out = np.zeros((len(images), 3, ph, pw), dtype=np.float64)
    for b, (im, (h, w)) in enumerate(zip(images, sizes)):
        x = resize_bilinear(im, h, w)
        if normalize:
            x = (x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
        out[b, :, :h, :w] = x.transpose(2, 0, 1)
    if input_type == "uint8":
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8), sizes
    return out.astype(np.float32), sizes


def rescale_boxes(boxes: np.ndarray, scale_y: float, scale_x: float, height: int, width: int) -> np.ndarray:
    """(n, 4) xyxy input pixels -> original pixels, clipped to the image, float32."""
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
    stride: int = 4,
    threshold: float = 0.5,
) -> np.ndarray:
    """Low-resolution probabilities (mh, mw) -> bool (height, width), sampled only inside `box` (original px)."""
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


def postprocess(
    outputs: dict[str, np.ndarray],
    original_sizes: Sequence[tuple[int, int]],
    resized_sizes: Sequence[tuple[int, int]],
    stride: int = 4,
    mask_threshold: float = 0.5,
    score_threshold: float = 0.0,
) -> list[dict[str, np.ndarray]]:
    """Graph outputs (boxes, scores, classes, masks, num_dets) -> per-image detections in original pixels."""
    results = []
    for b, ((h, w), (rh, rw)) in enumerate(zip(original_sizes, resized_sizes)):
        sy, sx = rh / h, rw / w
        n = int(np.clip(outputs["num_dets"][b], 0, outputs["scores"].shape[1]))
        keep = [
            d
            for d in range(n)
            if outputs["scores"][b, d] >= score_threshold and outputs["classes"][b, d] >= 0
        ]
        boxes = rescale_boxes(outputs["boxes"][b, keep], sy, sx, h, w)
        masks = np.zeros((len(keep), h, w), dtype=bool)
        for k, d in enumerate(keep):
            masks[k] = paste_mask(outputs["masks"][b, d], boxes[k], h, w, sy, sx, stride, mask_threshold)
        results.append(
            {
                "boxes": boxes,
                "scores": outputs["scores"][b, keep].astype(np.float32),
                "classes": outputs["classes"][b, keep].astype(np.int64),
                "masks": masks,
            }
        )
    return results
