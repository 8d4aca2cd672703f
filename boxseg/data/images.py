"""The one image-file reader: uint8 (H, W, 3) RGB with the EXIF orientation applied.

The dataset, `boxseg predict` and the exporter's calibration and verification images all read files here, so a
model is exported, verified and run on exactly the pixels it was trained on. numpy and Pillow only (no torch).
Errors are Pillow's (`OSError`, `UnidentifiedImageError` which is one, and for some corrupt files `SyntaxError` or
`ValueError`); each caller words them for its own user.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL image (L, LA, P, RGBA, CMYK, 16-bit or 32-bit grey, float) -> uint8 (H, W, 3) RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale (PNG 16-bit loads as I;16 or I): scale the full 0..65535 range down to 0..255.
        # Pillow's own convert("RGB") clips instead, which turns most of such an image white.
        a = np.asarray(img).astype(np.float64) / 257.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file -> uint8 (H, W, 3) RGB, EXIF orientation applied."""
    with Image.open(path) as img:
        return to_rgb_uint8(ImageOps.exif_transpose(img))


def read_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file after EXIF orientation, from its header only (no pixel decoding)."""
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING:
            w, h = h, w
    return w, h
