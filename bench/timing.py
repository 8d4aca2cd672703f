"""Timing and peak-memory helpers shared by every benchmark.

Clocks: ``time.perf_counter_ns`` (monotonic, highest resolution; never ``time.time``). When the work runs on a CUDA
device, pass ``sync`` (e.g. :func:`cuda_sync`) so queued kernels are finished before the clock is read; otherwise
the timer only measures the launch.

Robustness: benchmarks report percentiles (p50 is the headline number), and outliers are counted with the median
absolute deviation (MAD): a sample is an outlier when ``|x - median| > 5 * 1.4826 * MAD`` (1.4826 scales MAD to a
standard deviation for normal data). Outliers are counted, not dropped, so the percentiles stay honest.

Peak memory (:class:`PeakMemory`) means, for the block it wraps:
- CPU: the highest resident set size (RSS) the *process* reached during the block, minus the RSS at its start, in
  MiB. On Linux the kernel's high-water mark (``VmHWM``) is reset at block entry by writing ``5`` to
  ``/proc/self/clear_refs``, so the figure belongs to the block alone. Where that reset is refused, the figure is the
  rise of the lifetime high-water mark (``VmHWM`` or ``getrusage().ru_maxrss``), which reads 0 when the block stayed
  under an earlier peak; ``cpu_exact`` says which one you got. Memory freed and reused inside the block is not
  double counted; memory held by other threads of the process is included.
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the allocation at block entry,
  i.e. the extra memory the caching allocator handed out (not memory reserved by the cache, not cuDNN workspaces
  allocated outside torch).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

# |x - median| > OUTLIER_K * sigma_mad marks an outlier; 5 sigma keeps ordinary jitter in.
OUTLIER_K = 5.0
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Stats:
    """Summary of timing samples, in milliseconds."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    outliers: int

    def as_dict(self, prefix: str = "", suffix: str = "_ms") -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for key, value in asdict(self).items():
            name = key if key in ("n", "outliers") else f"{prefix}{key}{suffix}"
            out[name] = value
        return out


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list; q in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile: no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def count_outliers(values: list[float], k: float = OUTLIER_K) -> int:
    """Number of samples further than k robust sigmas (MAD-based) from the median."""
    if len(values) < 3:
        return 0
    ordered = sorted(values)
    med = percentile(ordered, 50.0)
    mad = percentile(sorted(abs(v - med) for v in values), 50.0)
    if mad == 0.0:
        # Over half the samples are identical: anything different from them is unusual.
        return sum(1 for v in values if v != med)
    limit = k * _MAD_TO_SIGMA * mad
    return sum(1 for v in values if abs(v - med) > limit)


def summarize(samples_ms: list[float]) -> Stats:
    """Percentiles, mean, sample std and outlier count of timings given in milliseconds."""
    if not samples_ms:
        raise ValueError("summarize: no samples (iters must be >= 1)")
    ordered = sorted(float(v) for v in samples_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in ordered) / (n - 1)) if n > 1 else 0.0
    return Stats(
        n=n,
        mean=mean,
        std=std,
        min=ordered[0],
        max=ordered[-1],
        p50=percentile(ordered, 50.0),
        p90=percentile(ordered, 90.0),
        p99=percentile(ordered, 99.0),
        outliers=count_outliers(ordered),
    )


class Timer:
    """``with Timer(sync) as t: ...`` then ``t.ms``; ``sync`` runs before both clock reads when given."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.start_ns = 0
        self.elapsed_ns = 0

    def __enter__(self) -> Self:
        if self.sync is not None:
            self.sync()
        self.start_ns = time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sync is not None:
            self.sync()
        self.elapsed_ns = time.perf_counter_ns() - self.start_ns

    @property
    def ms(self) -> float:
        return self.elapsed_ns / 1e6


def measure(
    fn: Callable[[], Any],
    warmup: int = 10,
    iters: int = 50,
    sync: Callable[[], None] | None = None,
) -> Stats:
    """Time ``fn()`` ``iters`` times after ``warmup`` untimed calls; returns :class:`Stats` in ms."""
    if iters < 1:
        raise ValueError(f"measure: iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"measure: warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(iters):
        with Timer(sync) as t:
            fn()
        samples.append(t.ms)
    return summarize(samples)


def cuda_sync(device: Any = None) -> Callable[[], None] | None:
    """A synchronise callable for a CUDA device (torch), or None for CPU devices / no torch."""
    if device is None or "cuda" not in str(device):
        return None
    import torch

    return lambda: torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _ru_maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak // 1024 if sys.platform == "darwin" else peak


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory rise during a block (see module docstring): ``cpu_mb`` and, for CUDA, ``cuda_mb``."""

    def __init__(self, cuda_device: Any = None) -> None:
        self.cuda_device = cuda_device if cuda_device is not None and "cuda" in str(cuda_device) else None
        self.cpu_mb: float = 0.0
        self.cuda_mb: float | None = None
        self.cpu_exact = False
        self._rss0 = 0
        self._hwm0 = 0
        self._cuda0 = 0

    def __enter__(self) -> Self:
        self.cpu_exact = _reset_hwm() and _proc_status_kib("VmHWM") is not None
        self._rss0 = _proc_status_kib("VmRSS") or 0
        self._hwm0 = _proc_status_kib("VmHWM") or _ru_maxrss_kib()
        if self.cuda_device is not None:
            import torch

            torch.cuda.synchronize(self.cuda_device)
            torch.cuda.reset_peak_memory_stats(self.cuda_device)
            self._cuda0 = torch.cuda.memory_allocated(self.cuda_device)
        return self

    def __exit__(self, *exc: object) -> None:
        hwm1 = _proc_status_kib("VmHWM") or _ru_maxrss_kib()
        base = self._rss0 if self.cpu_exact else self._hwm0
        self.cpu_mb = max(0, hwm1 - base) / 1024.0
        if self.cuda_device is not None:
            import torch

            torch.cuda.synchronize(self.cuda_device)
            peak = torch.cuda.max_memory_allocated(self.cuda_device)
            self.cuda_mb = max(0, peak - self._cuda0) / 2**20

    @property
    def mb(self) -> float:
        """The headline figure: device memory for CUDA work, host RSS otherwise."""
        return self.cuda_mb if self.cuda_mb is not None else self.cpu_mb
