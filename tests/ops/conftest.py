"""Fixtures for the ops tests: the fused CPU kernels are built once per session (a build failure is an error
here, never a silent fallback) and torch runs with 2 threads."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fused_cpu() -> None:
    from boxseg.ops import _build

    _build.ensure("cpu")
