"""One Predictor shared by 8 threads gives the same results as serial calls; the core releases the GIL."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
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


# Runs in a child process: a core that kept the GIL would deadlock this whole interpreter (no thread of it, not even a
# join with a timeout, could take the GIL back), so only the process boundary turns such a hang into a failure.
_HANDSHAKE_CHILD = r"""
import json, socket, sys, threading
import numpy as np
from boxseg.runtime import Predictor

predictor = Predictor(sys.argv[1], threads=1)
image = np.load(sys.argv[2])
ours, cores = socket.socketpair()
progress = []

def answer():
    ours.recv(1)               # the core says it is in flight (and then waits for our byte)
    progress.append("ran")     # Python code running while that core call cannot have returned
    ours.sendall(b"x")

helper = threading.Thread(target=answer)
helper.start()
detections, _, _ = predictor._core.predict([image], False, cores.fileno())
helper.join()
print(json.dumps({"progress": progress, "scores": detections[0]["scores"].tolist(),
                  "boxes": detections[0]["boxes"].tolist(), "classes": detections[0]["classes"].tolist()}))
"""
HANG_GUARD_S = 600  # only turns a deadlock into a failure; a passing run takes the child's start-up time


@pytest.mark.skipif(sys.platform == "win32", reason="the core's test handshake needs a POSIX socket pair")
def test_the_gil_is_released_while_the_core_runs(tmp_path, model_path) -> None:
    """No clock: inside its GIL-free scope, right after the graph run, the core writes one byte to a socket and
    blocks until a Python thread answers. That thread needs the GIL to run, so the call returns only if the GIL
    was released; a core that kept it deadlocks, which the hang guard reports."""
    image = random_image(np.random.default_rng(0), 96, 128)
    np.save(tmp_path / "image.npy", image)
    try:
        child = subprocess.run([sys.executable, "-c", _HANDSHAKE_CHILD, str(model_path), str(tmp_path / "image.npy")],
                               check=False, capture_output=True, text=True, timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"deadlock: the core call never let the Python helper thread run (no answer in "
                    f"{HANG_GUARD_S} s), i.e. it holds the GIL")
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout.splitlines()[-1])
    assert out["progress"] == ["ran"]
    # The gated call did the real work: the same detections as an ordinary call.
    expected = Predictor(model_path, threads=1)._core.predict([image], False)[0][0]
    assert len(out["scores"]) == len(expected["scores"]) > 0
    np.testing.assert_array_equal(np.float32(out["scores"]), expected["scores"])
    np.testing.assert_array_equal(np.float32(out["boxes"]).reshape(-1, 4), expected["boxes"])
    np.testing.assert_array_equal(out["classes"], expected["classes"])
