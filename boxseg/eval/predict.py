"""Predictions of a model or a checkpoint on images, and their COCO evaluation (segm and bbox AP).

The test view is the original image resized to ``input.test_size`` (shorter side, no flip; the contract's
resize rule, ``boxseg.contract``), padded to a multiple of 32; detections are mapped back to original pixels and
masks pasted at the original size (docs/method.md "Student network", inference).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from boxseg.contract import pad_to
from boxseg.model.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from boxseg.train.config import InputConfig, TrainConfig, config_from_dict
from boxseg.train.data import eval_transform


def size_groups(sizes: Sequence[tuple[int, int]], divisor: int) -> list[list[int]]:
    """Indices of `sizes` grouped by their padded size (each side rounded up to `divisor`), in first-seen order.

    Batching only images that pad to the same size makes a batch give exactly the detections each image gets
    alone: padding an image further to fit a larger neighbour changes its normalisation statistics and so its
    detections. The training forward is untouched; only inference groups its inputs this way.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(sizes):
        groups.setdefault((pad_to(h, divisor), pad_to(w, divisor)), []).append(i)
    return list(groups.values())


@torch.no_grad()
def predict_images(model: nn.Module, images: Sequence[np.ndarray], input_cfg: InputConfig,
                   device: torch.device | str = "cpu", score_thr: float = 0.05) -> list[dict[str, np.ndarray]]:
    """Run ``model.inference`` on uint8 (H, W, 3) RGB images; per image a dict of numpy arrays: ``boxes`` (n, 4)
    xyxy original pixels, ``scores`` (n,), ``classes`` (n,) contiguous, ``masks`` bool (n, H, W).

    Images whose views pad to the same size run as one batch (``size_groups``), so each image's detections are
    those it gets when run alone."""
    views = [eval_transform(im, input_cfg) for im in images]
    out: list[dict[str, np.ndarray] | None] = [None] * len(images)
    for group in size_groups([tuple(v.shape[-2:]) for v in views], input_cfg.size_divisor):
        results = _predict_views(model, [images[i] for i in group], [views[i] for i in group], input_cfg,
                                 device, score_thr)
        for i, r in zip(group, results):
            out[i] = r
    return out  # type: ignore[return-value]


def _predict_views(model: nn.Module, images: Sequence[np.ndarray], views: Sequence[torch.Tensor],
                   input_cfg: InputConfig, device: torch.device | str, score_thr: float
                   ) -> list[dict[str, np.ndarray]]:
    from boxseg.model.postprocess import paste_masks

    device = torch.device(device)
    div = input_cfg.size_divisor
    hmax = pad_to(max(v.shape[-2] for v in views), div)
    wmax = pad_to(max(v.shape[-1] for v in views), div)
    batch = torch.zeros((len(views), 3, hmax, wmax))
    for i, v in enumerate(views):
        batch[i, :, : v.shape[-2], : v.shape[-1]] = v
    model.eval()
    det = model.inference(batch.to(device), score_thr=score_thr)
    out = []
    for i, (image, view) in enumerate(zip(images, views)):
        n = int(det.num_dets[i])
        keep = det.scores[i, :n] >= score_thr
        boxes_in = det.boxes[i, :n][keep]
        input_size = tuple(view.shape[-2:])
        orig_size = tuple(image.shape[:2])
        masks = paste_masks(det.masks[i, :n][keep], boxes_in, orig_size, input_size=input_size,
                            threshold=_mask_threshold(model))
        sy, sx = orig_size[0] / input_size[0], orig_size[1] / input_size[1]
        boxes = boxes_in.float().cpu() * torch.tensor([sx, sy, sx, sy])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, orig_size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, orig_size[0])
        out.append({
            "boxes": boxes.numpy(),
            "scores": det.scores[i, :n][keep].float().cpu().numpy(),
            "classes": det.classes[i, :n][keep].cpu().numpy(),
            "masks": masks.cpu().numpy(),
        })
    return out


def _mask_threshold(model: nn.Module) -> float:
    cfg = getattr(model, "cfg", None)
    return float(getattr(cfg, "mask_thresh", 0.5))


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def predict_dataset(model: nn.Module, dataset: Any, device: torch.device | str = "cpu", batch_size: int = 4,
                    score_thr: float = 0.05, input_cfg: InputConfig | None = None) -> list[dict]:
    """COCO results (RLE masks) of ``model`` on every image of a ``CocoDataset``."""
    from boxseg.eval.results import instances_to_coco

    input_cfg = input_cfg or InputConfig()
    results: list[dict] = []
    for idx in _batches(len(dataset), max(1, batch_size)):
        images = [dataset.load_image(i) for i in idx]
        preds = predict_images(model, images, input_cfg, device, score_thr)
        for i, p in zip(idx, preds):
            results.extend(instances_to_coco(dataset.image_ids[i], p["boxes"], p["scores"], p["classes"],
                                             p["masks"], dataset.cat_ids))
    return results


def evaluate_model(model: nn.Module, dataset: Any, device: torch.device | str = "cpu", batch_size: int = 4,
                   score_thr: float = 0.05, input_cfg: InputConfig | None = None) -> dict[str, Any]:
    """Segm and bbox AP of ``model`` on a ``CocoDataset`` (``{"segm": {...}, "bbox": {...}}``, percent)."""
    from boxseg.eval.coco_eval import evaluate

    return evaluate(dataset.ann_file, predict_dataset(model, dataset, device, batch_size, score_thr, input_cfg))


def checkpoint_model(checkpoint: str | Path, device: torch.device | str = "cpu"
                     ) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """The student of a checkpoint in eval mode on ``device`` (``boxseg.model.checkpoint``), with the training
    config stored in it (its ``input`` section is the test-time view) and the checkpoint itself."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = config_from_dict(ckpt["config"], source=f"checkpoint {checkpoint}, field 'config'")
    model, _ = model_from_checkpoint(ckpt, device, path=checkpoint)
    return model, cfg, ckpt


def evaluate_checkpoint(checkpoint: str | Path, data_dir: str | Path, device: str = "cpu", batch_size: int = 4,
                        score_thr: float = 0.05, allow_outside_images: bool | None = None) -> dict[str, Any]:
    """``boxseg eval --checkpoint``: segm and bbox AP of a checkpoint's student on a dataset folder."""
    from boxseg.data.coco import CocoDataset

    model, cfg, ckpt = checkpoint_model(checkpoint, device)
    dataset = CocoDataset(data_dir, with_masks=False, allow_outside_images=allow_outside_images)
    if list(dataset.class_names) != list(ckpt["class_names"]):
        raise CheckpointError(
            f"checkpoint {checkpoint} was trained on classes {ckpt['class_names']}, but {dataset.ann_file} has "
            f"{dataset.class_names}"
        )
    return evaluate_model(model, dataset, device, batch_size, score_thr, input_cfg=cfg.input)
