"""Overlay drawing for predictions and ground truth (used by `boxseg predict` and the docs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Distinct, saturated colours; class k uses PALETTE[k % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
)
MASK_ALPHA = 0.45


def draw_instances(
    image: np.ndarray,
    boxes: np.ndarray | None,
    classes: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float] | None,
    masks: np.ndarray | None,
    class_names: Sequence[str],
) -> Image.Image:
    """Draw translucent class-coloured masks, box outlines and "class score" labels on a copy of `image`.

    image: uint8 (H, W, 3) RGB. boxes: (n, 4) xyxy pixels or None. classes: (n,) contiguous indices.
    scores: (n,) or None (labels then show the class only). masks: bool (n, H, W) or None.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"draw_instances: image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    n = len(classes)
    colours = np.asarray([PALETTE[int(c) % len(PALETTE)] for c in classes], dtype=np.float32).reshape(n, 3)
    out = img.astype(np.float32)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != (n, *img.shape[:2]):
            raise ValueError(f"draw_instances: masks must be ({n}, {img.shape[0]}, {img.shape[1]}), got {masks.shape}")
        for m, col in zip(masks, colours):
            out[m] = out[m] * (1 - MASK_ALPHA) + col * MASK_ALPHA
    pil = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    if boxes is None:
        return pil
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) != n:
        raise ValueError(f"draw_instances: {len(boxes)} boxes but {n} classes")
    draw = ImageDraw.Draw(pil)
    for k in range(n):
        col = tuple(int(v) for v in colours[k])
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=col, width=2)
        c = int(classes[k])
        label = class_names[c] if 0 <= c < len(class_names) else str(c)
        if scores is not None:
            label = f"{label} {float(np.asarray(scores).reshape(-1)[k]):.2f}"
        tx, ty = x0, max(0.0, y0 - 11)
        left, top, right, bottom = draw.textbbox((tx, ty), label)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=col)
        draw.text((tx, ty), label, fill=(255, 255, 255) if sum(col) < 450 else (0, 0, 0))
    return pil
