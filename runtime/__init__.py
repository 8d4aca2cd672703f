"""boxseg.runtime: run exported BoxSeg models from Python or C++ without torch.

`Predictor(model_path, device="cpu", threads=0)` wraps the C++ core (`_core`, built by the package build);
`reference` holds the pure-numpy pre/post-processing the core is tested against. Nothing here imports torch.
"""

from boxseg.runtime._native import example_program, find_onnxruntime_library
from boxseg.runtime.predictor import Predictor

__all__ = ["Predictor", "example_program", "find_onnxruntime_library"]
