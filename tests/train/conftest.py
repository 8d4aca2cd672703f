"""Fixtures for the training-engine tests: tiny synthetic datasets and a tiny-model config factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from boxseg.train.config import TrainConfig, apply_override, load_config

from boxseg.model.config import ModelConfig

SYNTH_CLASSES = 4  # categories of boxseg.data.synth


def make_dataset(root: Path, num_images: int, size: int, seed: int) -> Path:
    from boxseg.data.synth import generate_dataset

    generate_dataset(root, num_images=num_images, size=(size, size), seed=seed, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8 training and 4 validation images of 64x64 pixels."""
    root = tmp_path_factory.mktemp("synth64")
    return {"train": make_dataset(root / "train", 8, 64, seed=0), "val": make_dataset(root / "val", 4, 64, seed=1)}


def tiny_config(out_dir: Path, data: dict[str, Path], *overrides: str, preset: str = "boxinst",
                val: bool = False, size: int = 64) -> TrainConfig:
    """The preset with the tiny test model and small inputs; ``overrides`` are applied last."""
    base = [
        f"data.train_dir={data['train']}", f"runtime.out_dir={out_dir}",
        "solver.ims_per_batch=2", "solver.max_iter=4", "solver.warmup_iters=2", "solver.steps=[1000]",
        f"input.train_scales=[{size}]", f"input.train_max_size={2 * size}", f"input.test_size={size}",
        f"input.test_max_size={2 * size}",
        "runtime.log_every=1", "runtime.checkpoint_every=0", "runtime.progress=false", "data.workers=0",
        "loss.pairwise_warmup_iters=0",
    ]
    if val:
        base.append(f"data.val_dir={data['val']}")
    cfg = load_config(preset, overrides=base)
    cfg.model = ModelConfig.tiny(num_classes=SYNTH_CLASSES)
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


@pytest.fixture
def synth_dataset() -> Callable[..., Path]:
    """``synth_dataset(root, num_images, size, seed)`` writes a synthetic dataset folder and returns it."""
    return make_dataset


@pytest.fixture
def make_cfg(tiny_data: dict[str, Path]) -> Callable[..., TrainConfig]:
    def make(out_dir: Path, *overrides: str, **kwargs) -> TrainConfig:
        return tiny_config(out_dir, tiny_data, *overrides, **kwargs)

    return make


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: these tiny models gain nothing from more, and on a loaded 2-core machine OpenMP
    spin-waiting makes each step 10-50x more expensive."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
