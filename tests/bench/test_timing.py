"""Timing statistics, the measuring loop, peak memory and the machine description."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from boxseg.bench.machine import cpu_info, library_versions, machine_info
from boxseg.bench.timing import Timer, count_outliers, measure, percentile, summarize


def test_summarize_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 3.0, 101).tolist()
    st = summarize(samples)
    for q, got in ((50, st.p50), (90, st.p90), (99, st.p99)):
        assert got == pytest.approx(np.percentile(samples, q))
    assert st.mean == pytest.approx(np.mean(samples))
    assert st.std == pytest.approx(np.std(samples, ddof=1))
    assert (st.min, st.max, st.n) == (min(samples), max(samples), 101)
    assert st.as_dict()["p50_ms"] == st.p50 and st.as_dict()["outliers"] == st.outliers


def test_outliers_are_counted_not_dropped() -> None:
    base = [10.0 + 0.1 * (i % 5) for i in range(50)]
    assert count_outliers(base) == 0
    spiked = base + [100.0, 250.0]
    st = summarize(spiked)
    assert st.outliers == 2
    assert st.max == 250.0  # kept in the data
    assert st.p50 == pytest.approx(np.percentile(spiked, 50))  # the median barely moves
    assert count_outliers([5.0] * 10 + [6.0]) == 1  # MAD = 0 case


def test_percentile_and_summarize_errors() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_measure_calls_and_sync() -> None:
    calls: list[str] = []
    st = measure(lambda: calls.append("f"), warmup=3, iters=7, sync=lambda: calls.append("s"))
    assert calls.count("f") == 10 and st.n == 7
    assert calls.count("s") == 14  # before and after every timed call, never during warm-up
    assert st.min >= 0.0
    with pytest.raises(ValueError, match="iters"):
        measure(lambda: None, iters=0)


def test_timer_reads_the_clock_after_sync_on_entry_and_exit(monkeypatch) -> None:
    """A scripted clock instead of a sleep: the result is exact on any machine, however loaded."""
    import types

    from boxseg.bench import timing

    events: list[str] = []
    readings = iter([1_000_000, 21_500_000])

    def clock() -> int:
        events.append("clock")
        return next(readings)

    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter_ns=clock))
    with Timer(sync=lambda: events.append("sync")) as t:
        events.append("work")
    assert events == ["sync", "clock", "work", "sync", "clock"]
    assert t.elapsed_ns == 20_500_000 and t.ms == 20.5


PEAK_PROBE = """
import json
import numpy as np
from boxseg.bench.timing import PeakMemory
with PeakMemory() as small:
    pass
with PeakMemory() as mem:
    block = np.ones(12_500_000)  # 100 MiB, touched
    del block
print(json.dumps({"exact": mem.cpu_exact, "small": small.cpu_mb, "block": mem.cpu_mb, "cuda": mem.cuda_mb,
                  "mb": mem.mb}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS peak via /proc is Linux-only")
def test_peak_memory_sees_a_block_allocation() -> None:
    """In a fresh process: in the test process, threads that earlier tests left behind (thread pools, a session
    being torn down) may allocate during the block, and under load they often do (seen once in a full-suite run
    beside a training job)."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["exact"]:
        pytest.skip("this kernel refused the VmHWM reset; only lifetime peaks are available")
    assert 90.0 <= got["block"] <= 400.0
    assert got["small"] < 50.0
    assert got["cuda"] is None and got["mb"] == got["block"]


def test_machine_info_fields() -> None:
    info = machine_info()
    for key in ("os", "python", "cpu", "cores_logical", "cores_physical", "cores_usable", "ram_gib", "gpu",
                "gpu_driver", "versions"):
        assert key in info
    assert info["cores_logical"] >= info["cores_usable"] >= 1
    assert info["versions"]["numpy"] == np.__version__
    assert library_versions(("surely-not-a-real-package-xyz",)) == {"surely-not-a-real-package-xyz": None}
    assert cpu_info()["cores_physical"] >= 1
