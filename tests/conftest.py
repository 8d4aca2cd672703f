"""Shared test set-up: markers that skip cleanly when the hardware or library is absent."""

from __future__ import annotations

import importlib.util

import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch here")
    skip_trt = pytest.mark.skip(reason="needs TensorRT (pip extra `tensorrt`); it is not installed here")
    has_cuda = None
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "cuda" in item.keywords:
            if has_cuda is None:
                has_cuda = _has_cuda()
            if not has_cuda:
                item.add_marker(skip_cuda)
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)
