"""Fixtures for the runtime tests: small contract-obeying ONNX models made with onnx.helper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from boxseg.runtime.testing import make_test_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime_models")


@pytest.fixture(scope="session")
def make_model(model_dir: Path) -> Callable[..., Path]:
    """make_model(name, **make_test_model kwargs) -> path, cached per name for the session."""
    cache: dict[str, Path] = {}

    def make(name: str, **kwargs: object) -> Path:
        if name not in cache:
            cache[name] = make_test_model(model_dir / f"{name}.onnx", **kwargs)
        return cache[name]

    return make


@pytest.fixture(scope="session")
def model_path(make_model: Callable[..., Path]) -> Path:
    return make_model("default", max_dets=8, num_valid=5)


@pytest.fixture(scope="session")
def predictor(model_path: Path):
    from boxseg.runtime import Predictor

    return Predictor(model_path, threads=2)
