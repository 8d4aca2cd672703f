"""`boxseg eval --model M.onnx`: COCO AP of an exported model (fp32, fp16 or int8) run by `boxseg.runtime`.

The runtime Predictor applies the model's own resize rule (`boxseg.test_size` / `boxseg.test_max_size`
metadata, the PyTorch predictor's), so the numbers are comparable with `boxseg eval --checkpoint`. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ExportedModelError(ValueError):
    """The model and the dataset do not fit together (named file, field and expectation)."""


def evaluate_exported(model_path: str | Path, dataset: Any, *, batch_size: int = 4, score_thr: float = 0.05,
                      threads: int = 0, device: str = "cpu", per_category: bool = False
                      ) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics as `boxseg.eval.coco_eval.evaluate` returns them, the model's metadata) on a `CocoDataset`."""
    from boxseg.eval.coco_eval import evaluate
    from boxseg.eval.results import instances_to_coco
    from boxseg.runtime import Predictor

    predictor = Predictor(model_path, device=device, threads=threads, model_resize=True, score_threshold=score_thr)
    if list(predictor.class_names) != list(dataset.class_names):
        raise ExportedModelError(f"{model_path}: the model's classes (metadata boxseg.class_names) are "
                                 f"{list(predictor.class_names)}, but {dataset.ann_file} has {dataset.class_names}")
    results: list[dict] = []
    for start in range(0, len(dataset), max(1, batch_size)):
        idx = range(start, min(len(dataset), start + max(1, batch_size)))
        preds = predictor.predict_batch([dataset.load_image(i) for i in idx])
        for i, p in zip(idx, preds):
            results.extend(instances_to_coco(dataset.image_ids[i], p["boxes"], p["scores"], p["classes"],
                                             p["masks"], dataset.cat_ids))
    return evaluate(dataset.ann_file, results, per_category=per_category), dict(predictor.metadata)
