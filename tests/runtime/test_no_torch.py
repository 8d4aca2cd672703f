"""`import boxseg.runtime` (and running a model) never imports torch."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import numpy as np
import boxseg.runtime
from boxseg.runtime import Predictor
assert "torch" not in sys.modules, "import boxseg.runtime imported torch"
p = Predictor(sys.argv[1], threads=1)
out = p(np.zeros((40, 50, 3), np.uint8), rle=True)
assert "torch" not in sys.modules, "running the Predictor imported torch"
assert "onnxruntime" not in sys.modules, "the runtime should dlopen ORT, not import its Python package"
print("ok", len(out["scores"]))
"""


def test_import_and_predict_never_import_torch(model_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(model_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")
