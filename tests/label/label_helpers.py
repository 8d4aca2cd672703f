"""Helpers of the `boxseg label` tests: tiny random-weight checkpoints (no training).

The checkpoints' stored config opens QAM's gates (model.score_thresh=0, qam.tau_score=0): an untrained
model's box scores sit far below the default gate of 0.5, and these tests are about the plumbing, not the labels'
quality.
"""

from __future__ import annotations

from pathlib import Path

import torch

# The bench tests' tiny model (tests/bench/test_bench_ablation.py TINY), at 64 px.
TINY = ["model.backbone=resnet18", "model.pretrained=false", "model.resnet_width=16", "model.freeze_stem=false",
        "model.fpn_channels=32", "model.head_convs=1", "model.mask_branch_width=32", "model.mask_branch_convs=1",
        "model.mask_branch_norm=GN", "model.pre_nms_topk=200", "model.max_dets=20",
        "input.train_scales=[64]", "input.train_max_size=128", "input.test_size=64", "input.test_max_size=128",
        "solver.ims_per_batch=2", "runtime.progress=false", "runtime.threads=1"]
OPEN_GATES = ["model.score_thresh=0.0", "qam.tau_score=0.0", "teacher.input.short=64", "teacher.input.max=128"]


def make_checkpoint_file(path: Path, class_names: list[str], *, teacher: bool = True, preset: str = "boxseg",
                         seed: int = 0, extra: tuple[str, ...] = ()) -> Path:
    from boxseg.train.checkpoint import make_checkpoint, save_checkpoint
    from boxseg.train.config import config_to_dict, load_config

    from boxseg.model.condinst import CondInst

    cfg = load_config(preset, overrides=[*TINY, *OPEN_GATES, f"model.num_classes={len(class_names)}", *extra])
    torch.manual_seed(seed)
    student = CondInst(cfg.model)
    ema = None
    if teacher:
        torch.manual_seed(seed + 1)
        ema = CondInst(cfg.model)  # differs from the student, so a test can tell which one labelled
    ckpt = make_checkpoint(model=student, iteration=7, config=config_to_dict(cfg), class_names=class_names,
                           teacher=ema, cat_ids=list(range(1, len(class_names) + 1)))
    return save_checkpoint(ckpt, path)
