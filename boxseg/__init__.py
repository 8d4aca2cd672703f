"""BoxSeg: box-supervised instance segmentation, from training to deployment."""

__version__ = "0.1.0"
