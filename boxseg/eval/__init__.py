"""COCO evaluation (`coco_eval`), prediction -> COCO result conversion (`results`) and trivial baselines."""
