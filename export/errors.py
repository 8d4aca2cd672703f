"""The one exception type the exporter raises for bad input (a `ValueError`, so callers can catch either)."""

from __future__ import annotations


class ExportError(ValueError):
    """Bad input to the exporter: checkpoint, format, options or output path. The message says what and where."""
