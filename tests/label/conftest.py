"""Fixtures for `boxseg label`: a tiny synthetic split and a tiny random-weight checkpoint (label_helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from label_helpers import make_checkpoint_file


@pytest.fixture(scope="session")
def label_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 synthetic 64x64 images with exact GT masks."""
    from boxseg.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("label_data")
    generate_dataset(root, num_images=6, size=(64, 64), seed=3, progress=False)
    return root


@pytest.fixture(scope="session")
def class_names(label_data: Path) -> list[str]:
    from boxseg.data.coco import CocoDataset

    return list(CocoDataset(label_data).class_names)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, class_names: list[str]) -> Path:
    return make_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "last.pt", class_names)
