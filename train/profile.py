"""Where a training step goes: named stage timers that the training code opens at its stage boundaries.

The training code marks its stages with ``with stage("teacher_forward"): ...``. While no profiler is installed
(every normal run) ``stage`` returns one shared do-nothing context manager, so a mark costs a global read and two
empty calls. ``boxseg bench train --profile`` installs a :class:`StepProfiler` (``with profiling(p):``) and wraps
each training step in ``p.step()``; every mark then reads ``time.perf_counter_ns`` (after a
``torch.cuda.synchronize()`` on CUDA, so queued kernels are charged to the stage that launched them).

Times are exclusive: a stage opened inside another one (the loss terms inside the student's losses) is charged to
itself and not to its parent, and whatever runs inside a step but outside every stage is charged to ``other``. The
stages of one step therefore add up to the whole step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

OTHER = "other"  # step time outside every stage


class _NoStage:
    """The do-nothing context manager every ``stage`` returns while profiling is off."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


_NO_STAGE = _NoStage()
_active: StepProfiler | None = None


def stage(name: str) -> Any:
    """A context manager timing the code inside it as stage ``name`` of the current step (no-op when off)."""
    profiler = _active
    if profiler is None or profiler._times is None:
        return _NO_STAGE
    return _Stage(profiler, name)


def stage_begin(name: str) -> None:
    """Open stage ``name`` where a ``with`` block would not fit (a long block left at its indentation)."""
    profiler = _active
    if profiler is not None and profiler._times is not None:
        profiler._mark()
        profiler._stack.append(name)


def stage_end(name: str) -> None:
    """Close the stage ``stage_begin(name)`` opened."""
    profiler = _active
    if profiler is not None and profiler._times is not None:
        if not profiler._stack or profiler._stack[-1] != name:
            raise RuntimeError(f"stage_end({name!r}): the open stage is {(profiler._stack or [None])[-1]!r}")
        profiler._mark()
        profiler._stack.pop()


@contextmanager
def profiling(profiler: StepProfiler) -> Iterator[StepProfiler]:
    """Install ``profiler`` for the ``stage`` marks inside this block (one at a time)."""
    global _active
    if _active is not None:
        raise RuntimeError("boxseg.train.profile: a profiler is already installed")
    _active = profiler
    try:
        yield profiler
    finally:
        _active = None


class _Stage:
    __slots__ = ("name", "profiler")

    def __init__(self, profiler: StepProfiler, name: str) -> None:
        self.profiler, self.name = profiler, name

    def __enter__(self) -> None:
        self.profiler._mark()
        self.profiler._stack.append(self.name)

    def __exit__(self, *exc: object) -> bool:
        self.profiler._mark()
        self.profiler._stack.pop()
        return False


class StepProfiler:
    """Collects, for every profiled step, the nanoseconds spent in each stage (see the module docstring).

    ``steps`` holds one ``{stage: ms}`` dict per finished step, with ``OTHER`` for the unmarked remainder and
    ``"step"`` for the whole step.
    """

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = bool(cuda) and torch.cuda.is_available()
        self.steps: list[dict[str, float]] = []
        self._times: dict[str, int] | None = None  # None: not inside a step
        self._stack: list[str] = []
        self._last = 0

    def _now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter_ns()

    def _mark(self) -> None:
        """Charge the time since the last mark to the innermost open stage (or to OTHER)."""
        now = self._now()
        owner = self._stack[-1] if self._stack else OTHER
        self._times[owner] = self._times.get(owner, 0) + now - self._last  # type: ignore[index]
        self._last = now

    @contextmanager
    def step(self, record: bool = True) -> Iterator[None]:
        """One training step; with ``record=False`` (warm-up) its stages are timed but not kept."""
        if self._times is not None:
            raise RuntimeError("StepProfiler.step: steps do not nest")
        self._times, self._stack = {}, []
        start = self._last = self._now()
        try:
            yield
            self._mark()
            if record:
                times = {name: ns / 1e6 for name, ns in self._times.items()}
                times["step"] = (self._last - start) / 1e6
                self.steps.append(times)
        finally:
            self._times = None
