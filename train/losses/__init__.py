"""Student losses: FCOS detection, BoxInst projection + pairwise, Dice on GT or teacher pseudo masks."""

from __future__ import annotations

from boxseg.train.losses.config import LossConfig
from boxseg.train.losses.criterion import Criterion

__all__ = ["Criterion", "LossConfig"]
