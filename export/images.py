"""Images for calibration and verification, prepared the way the exported graph expects them.

The graph takes float32 NCHW RGB 0..255 with H, W multiples of 32 (normalisation is inside the graph), so the
preparation here is only: resize keeping the aspect ratio to fit the target size, and zero-pad (bottom/right).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from boxseg.export.errors import ExportError

from boxseg.contract import SIZE_DIVISOR, fit_size, pad_to

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Images of a COCO-format folder (DIR/annotations.json + DIR/images/, in annotation order) or, failing
    that, every image file in DIR/images/ or DIR, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ExportError(f"image folder {str(root)!r} does not exist or is not a folder.")
    ann = root / "annotations.json"
    paths: list[Path] = []
    if ann.is_file():
        try:
            coco = json.loads(ann.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{str(ann)!r}: not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
        if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
            raise ExportError(f"{str(ann)!r}: field 'images' must be a list of image records.")
        for i, rec in enumerate(coco["images"]):
            name = rec.get("file_name") if isinstance(rec, dict) else None
            if not isinstance(name, str):
                raise ExportError(f"{str(ann)!r}: images[{i}] has no string field 'file_name'.")
            path = root / "images" / name
            if not path.is_file():
                raise ExportError(f"{str(ann)!r}: image id {rec.get('id')} file {str(path)!r} is missing.")
            paths.append(path)
    else:
        base = root / "images" if (root / "images").is_dir() else root
        paths = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ExportError(f"no images found in {str(root)!r} (expected annotations.json + images/, or image files).")
    return paths[:limit] if limit else paths


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, EXIF orientation applied: the pixels training saw (`boxseg.data.images`)."""
    from boxseg.data.images import read_rgb as read_image_file

    try:
        return read_image_file(path)
    except OSError as exc:
        raise ExportError(f"cannot read image {str(path)!r}: {exc}") from exc


def letterbox(image: np.ndarray, size: tuple[int, int], divisor: int = SIZE_DIVISOR, *,
              fill_canvas: bool = True) -> tuple[np.ndarray, float]:
    """Resize `image` (uint8 HWC RGB) to fit inside `size` = (H, W) keeping its aspect ratio, then pad with zeros
    at the bottom/right to `size` (fill_canvas) or to the next multiple of `divisor`. Returns float32 (3, H', W')
    on the 0..255 scale and the scale factor applied. The resized size is `letterbox_size` (the contract's
    rounding, half up)."""
    from PIL import Image

    h, w = image.shape[:2]
    (nh, nw), scale = fit_size(h, w, size)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (h, w) else image
    if fill_canvas:
        ph, pw = size
    else:
        ph, pw = pad_to(nh, divisor), pad_to(nw, divisor)
    canvas = np.zeros((3, ph, pw), dtype=np.float32)
    canvas[:, :nh, :nw] = resized.transpose(2, 0, 1)
    return canvas, scale


def letterbox_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) `letterbox` resizes an image of (height, width) to, before padding."""
    return fit_size(height, width, size)[0]
