"""Model metadata: the contract keys, typed parsing with clear errors, ONNX props and the engine sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnx.helper as oh
import pytest
from boxseg.export.errors import ExportError
from boxseg.export.metadata import (
    REQUIRED_KEYS,
    build_metadata,
    parse_metadata,
    read_onnx_metadata,
    read_sidecar,
    set_onnx_metadata,
    sidecar_path,
    write_sidecar,
)

from boxseg import __version__


def _meta() -> dict[str, str]:
    return build_metadata(class_names=["a", "b"], mean=(1, 2, 3), std=(4, 5, 6), max_dets=50, preset="boxinst",
                          extra={"score_threshold": "0.05", "boxseg.opset": "18"})


def test_contract_keys_are_strings_and_parse_back() -> None:
    meta = _meta()
    assert set(REQUIRED_KEYS) <= set(meta)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["boxseg.format"] == "boxseg-onnx" and meta["boxseg.version"] == __version__
    assert meta["boxseg.input_format"] == "float32 NCHW RGB 0-255"
    parsed = parse_metadata(meta)
    assert parsed.class_names == ["a", "b"] and parsed.mean == [1.0, 2.0, 3.0] and parsed.std == [4.0, 5.0, 6.0]
    assert (parsed.size_divisor, parsed.mask_stride, parsed.max_dets) == (32, 4, 50)
    assert parsed.mask_threshold == 0.5 and parsed.preset == "boxinst"
    assert parsed.extra == {"boxseg.score_threshold": "0.05", "boxseg.opset": "18"}


def test_parse_errors_name_the_key() -> None:
    meta = _meta()
    with pytest.raises(ExportError, match=r"model.onnx: missing boxseg metadata keys \['boxseg.max_dets'\]"):
        parse_metadata({k: v for k, v in meta.items() if k != "boxseg.max_dets"}, source="model.onnx")
    with pytest.raises(ExportError, match="boxseg.class_names is not valid JSON"):
        parse_metadata({**meta, "boxseg.class_names": "[a, b"})
    with pytest.raises(ExportError, match="boxseg.max_dets must be a number"):
        parse_metadata({**meta, "boxseg.max_dets": '"many"'})
    with pytest.raises(ExportError, match="boxseg.format is 'other'"):
        parse_metadata({**meta, "boxseg.format": "other"})
    with pytest.raises(ExportError, match="3 values"):
        build_metadata(class_names=["a"], mean=(1, 2), std=(1, 2, 3), max_dets=1, preset="")


def test_onnx_props_are_replaced_not_duplicated(tmp_path: Path) -> None:
    graph = oh.make_graph([oh.make_node("Identity", ["x"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = oh.make_model(graph)
    set_onnx_metadata(model, {"other": "keep", "boxseg.preset": "old"})
    set_onnx_metadata(model, _meta())
    keys = [p.key for p in model.metadata_props]
    assert len(keys) == len(set(keys))
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    back = read_onnx_metadata(path)
    assert back["other"] == "keep" and back["boxseg.preset"] == "boxinst"
    assert parse_metadata(back).max_dets == 50


def test_engine_sidecar_round_trip_and_errors(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    assert sidecar_path(engine) == tmp_path / "model.engine.json"
    write_sidecar(sidecar_path(engine), _meta())
    assert read_sidecar(engine) == _meta()
    with pytest.raises(ExportError, match="sidecar .* is missing"):
        read_sidecar(tmp_path / "other.engine")
    sidecar_path(engine).write_text(json.dumps({"boxseg.max_dets": 5}))
    with pytest.raises(ExportError, match="string values"):
        read_sidecar(engine)
