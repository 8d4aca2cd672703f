"""The one error type for bad dataset input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input. The message names the file, the id (image / annotation / category) and the field."""
