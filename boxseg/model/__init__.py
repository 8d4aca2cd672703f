"""CondInst student model (docs/method.md "Student network"): `ModelConfig`, `CondInst`, its dense and detection
outputs, mask pasting."""

from __future__ import annotations

from boxseg.model.condinst import Candidates, CondInst, DenseOutput, Detections, FlatDense
from boxseg.model.config import ModelConfig
from boxseg.model.postprocess import paste_masks

__all__ = ["Candidates", "CondInst", "DenseOutput", "Detections", "FlatDense", "ModelConfig", "paste_masks"]
