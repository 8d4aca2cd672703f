"""Datasets: the synthetic COCO generator (`synth`), the COCO reader (`coco`) and overlay drawing (`visualize`)."""
