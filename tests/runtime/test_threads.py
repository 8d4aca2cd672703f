"""One Predictor shared by 8 threads gives the same results as serial calls."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from boxseg.runtime import Predictor
from runtime_helpers import random_image


def test_eight_threads_sharing_one_predictor_match_serial_calls(model_path) -> None:
    predictor = Predictor(model_path, threads=2, max_size=128)
    rng = np.random.default_rng(0)
    images = [random_image(rng, int(rng.integers(40, 160)), int(rng.integers(40, 160))) for _ in range(16)]
    serial = [predictor(im) for im in images]
    serial_rle = [predictor(im, rle=True) for im in images]

    def work(i: int) -> tuple[int, dict, dict, dict]:
        out = predictor(images[i])
        out_rle = predictor(images[i], rle=True)
        return i, out, out_rle, predictor.last_timings

    jobs = [i % len(images) for i in range(48)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, jobs))
    for i, out, out_rle, timings in results:
        for key in ("boxes", "scores", "classes", "masks"):
            np.testing.assert_array_equal(out[key], serial[i][key])
        assert out_rle["masks"] == serial_rle[i]["masks"]
        # Timings are per thread: this thread's last call was the RLE call on image i.
        assert timings["batch"] == 1 and timings["total_ms"] > 0


def test_the_gil_is_released_while_the_core_runs(make_model) -> None:
    # A graph that takes tens of milliseconds; while a helper thread runs it, the main thread keeps going.
    predictor = Predictor(make_model("heavy", convs=2, conv_channels=16), threads=1)
    image = random_image(np.random.default_rng(0), 384, 384)
    predictor(image)
    calls: list[float] = []
    done = threading.Event()

    def work() -> None:
        for _ in range(3):
            start = time.perf_counter()
            predictor(image)
            calls.append(time.perf_counter() - start)
        done.set()

    thread = threading.Thread(target=work)
    ticks = [time.perf_counter()]
    thread.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    thread.join()
    longest_gap = float(np.max(np.diff(ticks)))
    # Holding the GIL for a whole call would stall this loop for at least one call's duration.
    assert longest_gap < 0.5 * min(calls), (longest_gap, calls)
