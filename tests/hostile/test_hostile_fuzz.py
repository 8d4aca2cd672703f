"""Hypothesis fuzzing of the COCO reader (tests/hostile/fuzz_coco_reader.py), run in a child process with a memory
limit and a timeout: random JSON mutations of a valid file give the reader's own DataError or a correct load whose
masks decode and whose evaluation runs; never another exception, a crash or a hang."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hostile_helpers import run_limited

SCRIPT = Path(__file__).resolve().parent / "fuzz_coco_reader.py"


def test_coco_reader_survives_random_json_mutations() -> None:
    proc = run_limited([sys.executable, str(SCRIPT), "--examples", "200"], timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["examples"] == 200
    # Both outcomes occur, so the mutations neither always break the file nor never touch it.
    assert stats["errors"] > 0 and stats["loads"] > 0
