"""The format table drives names, validation with suggestions, availability and dispatch."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict

import pytest
from boxseg.export.errors import ExportError
from boxseg.export.formats import FORMATS, ExportFormat, format_names, get_format, validate_options


def test_names_and_lookup_are_case_insensitive() -> None:
    assert format_names() == ["onnx", "tensorrt"]
    assert get_format("ONNX").name == "onnx"
    assert get_format(" TensorRT ").suffix == ".engine"


@pytest.mark.parametrize(("typo", "suggestion"), [("onx", "onnx"), ("onnxx", "onnx"), ("tensorrtt", "tensorrt"),
                                                  ("tensort", "tensorrt")])
def test_mistyped_format_gets_a_close_match(typo: str, suggestion: str) -> None:
    with pytest.raises(ExportError, match=f"Did you mean '{suggestion}'"):
        get_format(typo)


def test_unrelated_name_lists_the_choices_without_a_guess() -> None:
    with pytest.raises(ExportError) as err:
        get_format("coreml")
    assert "Did you mean" not in str(err.value)
    assert "onnx, tensorrt" in str(err.value)


def test_option_validation_follows_the_table() -> None:
    onnx, trt = get_format("onnx"), get_format("tensorrt")
    with pytest.raises(ExportError, match="--half and --int8 are two precisions of one ONNX artefact"):
        validate_options(onnx, half=True, int8=True, calib_data="x")
    validate_options(onnx, half=True)  # ONNX fp16 and int8 (export/quantize.py)
    validate_options(onnx, int8=True, calib_data="x")
    for fmt in (onnx, trt):
        with pytest.raises(ExportError, match="--int8 needs calibration images: pass --calib DIR"):
            validate_options(fmt, int8=True)
    unsupported = ExportFormat(**{**asdict(onnx), "name": "plain", "half": False, "int8": False})
    with pytest.raises(ExportError, match=r"--half is not supported for format 'plain' \(supported by: onnx, "
                                          r"tensorrt\)"):
        validate_options(unsupported, half=True)
    with pytest.raises(ExportError, match="--int8 is not supported for format 'plain'"):
        validate_options(unsupported, int8=True, calib_data="x")
    with pytest.raises(ExportError, match="only used with --int8"):
        validate_options(trt, calib_data="x")
    validate_options(trt, half=True, int8=True, calib_data="x")  # a valid combination passes


def test_every_row_dispatches_to_a_function_and_names_bench_backends() -> None:
    for fmt in FORMATS:
        assert callable(fmt.exporter_fn())
        assert fmt.bench_backends
        assert fmt.suffix.startswith(".")


def test_availability_reason_names_the_missing_package_and_extra() -> None:
    ok, reason = get_format("tensorrt").available()
    if importlib.util.find_spec("tensorrt") is None:
        assert not ok
        assert "'tensorrt'" in reason and "boxseg[tensorrt]" in reason
    else:
        assert ok and reason == ""
    assert get_format("onnx").available() == (True, "")
