"""`export()`: one call from a checkpoint to a verified artefact; the CLI and the bench use it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from boxseg.export.atomic import check_output_path
from boxseg.export.errors import ExportError
from boxseg.export.formats import get_format, validate_options
from boxseg.export.options import ExportOptions, ExportResult
from boxseg.export.source import StudentSource, load_student


def export(checkpoint: str | Path | StudentSource, fmt: str, out: str | Path, options: ExportOptions | None = None,
           **overrides) -> ExportResult:
    """Export the student of `checkpoint` (a path, or a StudentSource) to format `fmt` at `out`.

    Cheap checks run first (format, options, output path, TensorRT availability) so bad input fails before the
    model is loaded; the artefact is written atomically (no partial file on any failure).
    """
    opts = replace(options or ExportOptions(), **overrides)
    spec = get_format(fmt)
    validate_options(spec, half=opts.half, int8=opts.int8, calib_data=opts.calib_data)
    if opts.calib_data is not None and not Path(opts.calib_data).is_dir():
        raise ExportError(f"--calib {str(opts.calib_data)!r} is not a folder.")
    if opts.calib_images is None:
        opts = replace(opts, calib_images=spec.calib_images)
    elif opts.calib_images < 1:
        raise ExportError(f"--calib-images {opts.calib_images}: expected at least 1.")
    out_path = check_output_path(out)
    ok, reason = spec.available()
    if not ok:
        raise ExportError(reason)
    start = time.perf_counter()
    source = checkpoint if isinstance(checkpoint, StudentSource) else load_student(checkpoint)
    result: ExportResult = spec.exporter_fn()(source, out_path, opts)
    result.seconds = time.perf_counter() - start
    return result
