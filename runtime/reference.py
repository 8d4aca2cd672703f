"""Pure-numpy reference of the runtime's pre- and post-processing; the C++ core is tested against it.

The sizes, padding, bilinear taps, box rescaling and mask pasting are the image <-> graph contract in
`boxseg.contract` (its docstring states the rules); this module adds the reference resize and the whole
pre/post pipeline built from them. The C++ core implements exactly these.

Bilinear resize (PyTorch's align_corners=False, the taps of `boxseg.contract.axis_taps`): destination pixel i
has its centre at i + 0.5; it reads the source at s = (i + 0.5) * (source pixels per destination pixel) - 0.5,
with source pixel centres at integers; s < 0 is clamped to 0; i0 = floor(s), i1 = i0 + 1, weight of i1 = s - i0;
at or past the last source pixel both taps are the last pixel. Interpolate rows first, then columns.

Batch. Images are resized, then padded at the bottom/right with 0 to the largest size in the batch rounded up
to a multiple of `size_divisor`; layout (B, 3, H, W) RGB; float32 0..255 (or (x - mean) / std when the graph
wants normalised input, or uint8 rounded half up).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from boxseg.contract import (
    MASK_STRIDE,
    MASK_THRESHOLD,
    SIZE_DIVISOR,
    axis_taps,
    box_pixels,
    padded_size,
    paste_mask,
    paste_masks,
    plan_resize,
    rescale_boxes,
)

__all__ = ["axis_taps", "box_pixels", "padded_size", "paste_mask", "paste_masks", "plan_resize", "postprocess",
           "preprocess", "rescale_boxes", "resize_bilinear"]


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
    size_divisor: int = SIZE_DIVISOR,
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


def postprocess(
    outputs: dict[str, np.ndarray],
    original_sizes: Sequence[tuple[int, int]],
    resized_sizes: Sequence[tuple[int, int]],
    stride: int = MASK_STRIDE,
    mask_threshold: float = MASK_THRESHOLD,
    score_threshold: float = 0.0,
) -> list[dict[str, np.ndarray]]:
    """Graph outputs (boxes, scores, classes, masks, num_dets) -> per-image detections in original pixels."""
    results = []
    for b, ((h, w), (rh, rw)) in enumerate(zip(original_sizes, resized_sizes)):
        n = int(np.clip(outputs["num_dets"][b], 0, outputs["scores"].shape[1]))
        keep = [
            d
            for d in range(n)
            if outputs["scores"][b, d] >= score_threshold and outputs["classes"][b, d] >= 0
        ]
        boxes, masks = paste_masks(outputs["masks"][b, keep], outputs["boxes"][b, keep], (h, w), (rh, rw), stride,
                                   mask_threshold)
        results.append(
            {
                "boxes": boxes,
                "scores": outputs["scores"][b, keep].astype(np.float32),
                "classes": outputs["classes"][b, keep].astype(np.int64),
                "masks": masks,
            }
        )
    return results
