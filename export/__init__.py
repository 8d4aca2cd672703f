"""boxseg.export: the trained student as one ONNX graph (and a TensorRT engine), verified against PyTorch.

Entry points: `export(checkpoint, fmt, out, **options)` (boxseg.export.api), the format table `FORMATS`
(boxseg.export.formats), and `boxseg export` on the command line. Importing this package does not import torch.
"""

from boxseg.export.api import export
from boxseg.export.errors import ExportError
from boxseg.export.formats import FORMATS, ExportFormat, format_names, get_format
from boxseg.export.options import ExportOptions, ExportResult

__all__ = ["FORMATS", "ExportError", "ExportFormat", "ExportOptions", "ExportResult", "export", "format_names",
           "get_format"]
