"""Fixtures for the bench tests (the tiny models themselves live in tiny_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import build_tiny_onnx


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
