"""Graph clean-up of the exported ONNX graph with onnxslim (constant folding, BatchNorm/affine folding into Conv,
dead-node removal), so that the file the runtime loads is the smaller graph and the int8 quantizer sees each Conv
with its BatchNorm already folded in.

onnxslim is a regular dependency (pyproject.toml): the clean-up is on by default. If it is missing or fails, the
export goes on with the unslimmed graph and says why (`SlimReport.skipped`); a slimmed graph that does not pass
onnx.checker or changes the graph's inputs/outputs is discarded the same way.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass


@dataclass
class SlimReport:
    nodes_before: int
    nodes_after: int  # == nodes_before when skipped
    tool: str  # "onnxslim <version>" or "" when skipped
    skipped: str = ""  # why the unslimmed graph was kept
    seconds: float = 0.0


def _io_signature(proto) -> list[tuple[str, int, tuple]]:
    out = []
    for value in [*proto.graph.input, *proto.graph.output]:
        t = value.type.tensor_type
        dims = tuple(d.dim_param or d.dim_value for d in t.shape.dim)
        out.append((value.name, t.elem_type, dims))
    return out


def slim_graph(proto):
    """(slimmed ModelProto or `proto` unchanged, SlimReport). Metadata props and the doc string are kept."""
    import onnx

    before = len(proto.graph.node)
    start = time.perf_counter()
    try:
        import onnxslim
    except ImportError:
        return proto, SlimReport(before, before, "", "onnxslim is not installed (pip install onnxslim)")
    try:
        # onnxslim prints a summary table; `--json` needs stdout for the one JSON object.
        with contextlib.redirect_stdout(io.StringIO()):
            slimmed = onnxslim.slim(proto)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional clean-up keeps the exported graph
        return proto, SlimReport(before, before, "", f"onnxslim failed: {type(exc).__name__}: {str(exc)[:300]}")
    reason = ""
    if slimmed is None:
        reason = "onnxslim returned no model"
    elif _io_signature(slimmed) != _io_signature(proto):
        reason = "onnxslim changed the graph's inputs/outputs"
    else:
        try:
            onnx.checker.check_model(slimmed, full_check=True)
        except onnx.checker.ValidationError as exc:
            reason = f"the slimmed graph fails onnx.checker: {str(exc)[:300]}"
    if reason:
        return proto, SlimReport(before, before, "", reason, time.perf_counter() - start)
    del slimmed.metadata_props[:]
    slimmed.metadata_props.extend(proto.metadata_props)
    slimmed.doc_string, slimmed.producer_name = proto.doc_string, proto.producer_name
    return slimmed, SlimReport(before, len(slimmed.graph.node), f"onnxslim {onnxslim.__version__}",
                               seconds=time.perf_counter() - start)
