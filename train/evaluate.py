"""Moved: predicting and evaluating a model or checkpoint lives in `boxseg.eval.predict`; re-exported here for
the trainer's periodic evaluation, `boxseg label` and the ablation bench."""

from boxseg.eval.predict import (  # noqa: F401
    _predict_views,
    checkpoint_model,
    evaluate_checkpoint,
    evaluate_model,
    predict_dataset,
    predict_images,
    size_groups,
)

# The old name of `checkpoint_model`: (model, TrainConfig, checkpoint), as train/label.py and the demo use it.
model_from_checkpoint = checkpoint_model
