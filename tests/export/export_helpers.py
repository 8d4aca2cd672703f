"""Helpers shared by the export tests: a tiny student whose outputs mix full and padded detections, and a
checkpoint writer in the contract format (with a deliberately different teacher)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLASS_NAMES = ["ellipse", "star", "ring"]
EXPORT_IMGSZ = (160, 224)
VERIFY_SIZES = [(160, 224), (64, 64)]  # 64x64: fewer candidates than pre_nms_topk, so TopK's K is data-sized


def make_student(seed: int = 0):
    """A tiny CondInst whose score threshold is set so that some images fill all D slots and some do not."""
    from boxseg.export.images import letterbox
    from boxseg.export.verify import sample_images

    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    cfg = ModelConfig.tiny(num_classes=len(CLASS_NAMES), prior_prob=0.05, pre_nms_topk=300, score_thresh=0.0)
    torch.manual_seed(seed)
    model = CondInst(cfg).eval()
    x = torch.from_numpy(np.stack([letterbox(im, (64, 64))[0] for im in sample_images(4)]))
    scores = model.inference(x).scores
    model.cfg.score_thresh = float(scores[0].median())  # image 0 keeps about half of its D detections
    return model


def write_checkpoint(path: Path, student, *, teacher_value: float = 0.5, **overrides) -> Path:
    """A checkpoint in the contract format; the teacher's weights are all `teacher_value` (never exported)."""
    from boxseg.train.checkpoint import make_checkpoint, save_checkpoint

    from boxseg.config import config_to_dict
    from boxseg.model.condinst import CondInst

    teacher = CondInst(student.cfg)
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(teacher_value)
    ckpt = make_checkpoint(model=student, teacher=teacher, iteration=123,
                           config={"method": "supervised", "preset": "boxinst", "model": config_to_dict(student.cfg)},
                           class_names=CLASS_NAMES)
    ckpt.update(overrides)
    save_checkpoint(ckpt, path)
    return path
