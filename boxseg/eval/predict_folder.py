"""Run a checkpoint (PyTorch) or an exported model (boxseg.runtime) on image files: COCO results JSON and one
overlay PNG per image. Importing this module imports no torch (the exported-model path never needs it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from boxseg.tempfiles import write_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(path: str | Path) -> list[Path]:
    """A single image file, or the image files directly inside a folder (sorted by name)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"--images {p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    raise FileNotFoundError(f"--images {p}: no such file or folder")


def check_output_folder(images: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder that is, or contains, the input folder: overlays are named ``<image stem>.png``,
    so writing them where the inputs live would overwrite PNG inputs with their own overlays (and mix the
    outputs into the dataset). For a single image file, its folder is the input folder."""
    src = Path(images)
    src_dir = (src.parent if src.is_file() else src).resolve()
    out = Path(out_dir).resolve()
    if out == src_dir or out in src_dir.parents:
        what = "is" if out == src_dir else "contains"
        raise ValueError(f"--out {out_dir} {what} the input folder {src_dir}; overlays (<image>.png) and "
                         f"results.json would be written among the inputs and could overwrite them. Choose an "
                         f"output folder outside it, e.g. --out {src_dir.parent / (src_dir.name + '-predictions')}")


def read_image(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, EXIF orientation applied (`boxseg.data.images`, the dataset's reader)."""
    from boxseg.data.images import read_rgb

    try:
        return read_rgb(path)
    except OSError as exc:
        raise OSError(f"{path}: cannot read this image ({exc})") from exc


def predict_folder(checkpoint: str | Path, images: str | Path, out_dir: str | Path, score_thr: float = 0.3,
                   device: str = "cpu", batch_size: int = 4, overlays: bool = True) -> dict[str, Any]:
    """Run a checkpoint's student (PyTorch) on image files. See ``write_predictions`` for the outputs."""
    from boxseg.eval.predict import checkpoint_model, predict_images

    files = list_images(images)  # cheap checks before loading the model
    check_output_folder(images, out_dir)
    model, cfg, ckpt = checkpoint_model(checkpoint, device)
    class_names = list(ckpt["class_names"])
    cat_ids = list(ckpt.get("cat_ids") or range(1, len(class_names) + 1))
    summary = write_predictions(
        lambda arrays: predict_images(model, arrays, cfg.input, device, score_thr),
        files, out_dir, class_names, cat_ids, batch_size, overlays)
    return {"checkpoint": str(checkpoint), "score_thr": score_thr, **summary}


def predict_folder_exported(model_path: str | Path, images: str | Path, out_dir: str | Path,
                            score_thr: float = 0.3, device: str = "cpu", batch_size: int = 4,
                            overlays: bool = True, threads: int = 0) -> dict[str, Any]:
    """Run an exported model through ``boxseg.runtime`` (no torch). The resize rule comes from the model's
    metadata (``boxseg.test_size`` / ``boxseg.test_max_size``), so results match the PyTorch predictor."""
    from boxseg.runtime import Predictor

    files = list_images(images)  # cheap checks before loading the model
    check_output_folder(images, out_dir)
    predictor = Predictor(model_path, device=device, threads=threads, model_resize=True, score_threshold=score_thr)
    meta = predictor.metadata
    class_names = list(predictor.class_names)
    cat_ids = json.loads(meta["boxseg.cat_ids"]) if "boxseg.cat_ids" in meta else list(
        range(1, len(class_names) + 1))
    summary = write_predictions(predictor.predict_batch, files, out_dir, class_names, cat_ids, batch_size,
                                overlays)
    return {"model": str(model_path), "score_thr": score_thr, **summary}


def write_predictions(predict_chunk: Callable[[list[np.ndarray]], list[dict[str, Any]]], files: list[Path],
                      out_dir: str | Path, class_names: list[str], cat_ids: list[int], batch_size: int = 4,
                      overlays: bool = True) -> dict[str, Any]:
    """Write ``out_dir/results.json`` (COCO results; image_id = position in the sorted file list, plus
    ``file_name``) and ``out_dir/<image stem>.png`` overlays. ``predict_chunk`` maps uint8 RGB images to dicts
    with ``boxes`` (original pixels), ``scores``, ``classes`` and bool ``masks``."""
    from boxseg.data.visualize import draw_instances
    from boxseg.eval.results import instances_to_coco

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    per_image = []
    for start in range(0, len(files), max(1, batch_size)):
        chunk = files[start: start + batch_size]
        arrays = [read_image(f) for f in chunk]
        for k, (f, image, p) in enumerate(zip(chunk, arrays, predict_chunk(arrays))):
            image_id = start + k + 1
            dets = instances_to_coco(image_id, p["boxes"], p["scores"], p["classes"], p["masks"], cat_ids)
            for d in dets:
                d["file_name"] = f.name
            results.extend(dets)
            per_image.append({"file_name": f.name, "image_id": image_id, "instances": len(dets)})
            if overlays:
                draw_instances(image, p["boxes"], p["classes"], p["scores"], p["masks"], class_names).save(
                    out / f"{f.stem}.png")
    write_atomic(out / "results.json", json.dumps(results))
    return {
        "images": len(files), "instances": len(results), "results": str(out / "results.json"),
        "overlays": str(out) if overlays else None, "per_image": per_image,
    }
