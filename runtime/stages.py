"""Stage timings of the runtime (pre, infer, post, end to end) against a bare onnxruntime session on the same
graph and input. The latency benchmark (`boxseg bench latency`) can call `measure`; from a shell:

    python -m boxseg.runtime.stages --test-model --size 640 640 --threads 2 --iterations 50
    python -m boxseg.runtime.stages model.onnx --size 480 640

`--test-model` times the contract test model (runtime/testing.py) with 20 valid detections out of 24 and two
32-channel full-resolution convolutions (`--convs`), so the graph costs something. Times are medians (and
minima, `*_min_ms`) in milliseconds; the bare session uses onnxruntime's default options and the same number
of intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB image with smooth blobs (realistic mask edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.05, 0.3) * max(height, width)
        image += rng.uniform(40, 120, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def measure(
    model_path: str | Path,
    height: int = 640,
    width: int = 640,
    *,
    threads: int = 0,
    iterations: int = 30,
    warmup: int = 3,
    rle: bool = False,
) -> dict[str, Any]:
    """Median stage times of `Predictor` and of a bare `onnxruntime.InferenceSession.run` on the same input."""
    import onnxruntime as ort
    from boxseg.runtime import Predictor
    from boxseg.runtime.reference import preprocess

    predictor = Predictor(model_path, threads=threads)
    image = smooth_image(height, width)
    batch, _ = preprocess([image], size_divisor=predictor.size_divisor)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for _ in range(warmup):
        predictor(image, rle=rle)
        session.run(names, {"images": batch})
    stages: dict[str, list[float]] = {
        k: [] for k in ("pre_ms", "infer_ms", "post_ms", "total_ms", "end_to_end_ms")
    }
    bare: list[float] = []
    instances = 0
    # Alternating blocks: load changes on the machine hit both alike, while one engine's idle threads do not
    # compete with the other's work as they would when alternating every call.
    block = 5
    for first in range(0, iterations, block):
        n = min(block, iterations - first)
        for _ in range(n):
            out = predictor(image, rle=rle)
            instances = len(out["scores"])
            timings = predictor.last_timings
            for key, values in stages.items():
                values.append(timings[key])
        for _ in range(n):
            start = time.perf_counter()
            session.run(names, {"images": batch})
            bare.append((time.perf_counter() - start) * 1e3)
    result: dict[str, Any] = {key: statistics.median(v) for key, v in stages.items()}
    result.update({key.replace("_ms", "_min_ms"): min(v) for key, v in stages.items()})
    result["ort_session_ms"] = statistics.median(bare)
    result["ort_session_min_ms"] = min(bare)
    result["end_to_end_over_session"] = result["end_to_end_ms"] / result["ort_session_ms"]
    result["post_fraction"] = result["post_ms"] / result["end_to_end_ms"]
    result.update(
        model=str(model_path),
        height=height,
        width=width,
        instances=instances,
        threads=predictor._core.pool_size,
        iterations=iterations,
        rle=rle,
        backend=predictor.backend,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", help="exported .onnx model")
    parser.add_argument("--test-model", action="store_true", help="time the contract test model instead")
    parser.add_argument("--convs", type=int, default=2, help="full-resolution convolutions in the test model")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rle", action="store_true")
    args = parser.parse_args(argv)
    if args.test_model == bool(args.model):
        parser.error("give a model path or --test-model")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.test_model:
            from boxseg.runtime.testing import make_test_model

            model = make_test_model(Path(tmp) / "test.onnx", max_dets=24, num_valid=20, convs=args.convs)
        result = measure(model, *args.size, threads=args.threads, iterations=args.iterations, rle=args.rle)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
