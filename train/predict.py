"""Moved: prediction on image files lives in `boxseg.eval.predict_folder` (re-exported for old imports)."""

from boxseg.eval.predict_folder import (  # noqa: F401
    check_output_folder,
    list_images,
    predict_folder,
    predict_folder_exported,
    read_image,
    write_predictions,
)
