"""`boxseg export`: bad input gives a clear error and leaves no file; one real static export with --verify --json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx
import onnx.helper as oh
import pytest
import torch
from click.testing import CliRunner
from export_helpers import make_student, write_checkpoint

from boxseg.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", make_student())


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["export", *args])
    return result.exit_code, result.stdout, result.stderr


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_help_lists_the_formats_from_the_table() -> None:
    code, out, _ = _run("--help")
    assert code == 0
    out = " ".join(out.split())  # help text is wrapped to the terminal width
    assert "onnx (ONNX, .onnx)" in out and "tensorrt (TensorRT, .engine)" in out
    for option in ("--opset", "--dynamic / --static", "--batch", "--imgsz", "--max-dets", "--half", "--int8",
                   "--calib", "--calib-images", "--slim / --no-slim", "--verify"):
        assert option in out


def test_mistyped_format_is_a_usage_error_with_a_suggestion(tmp_path: Path, checkpoint: Path) -> None:
    code, _, err = _run("--checkpoint", str(checkpoint), "--format", "onxx", "--out", str(tmp_path / "m.onnx"))
    assert code == 2
    assert "unknown export format 'onxx'. Did you mean 'onnx'?" in err
    assert _files(tmp_path) == []


@pytest.mark.parametrize(("extra", "message"), [
    (["--format", "onnx", "--half", "--int8", "--calib", "."], "--half and --int8 are two precisions"),
    (["--format", "onnx", "--int8"], "--int8 needs calibration images: pass --calib DIR"),
    (["--format", "tensorrt", "--int8"], "--int8 needs calibration images"),
    (["--format", "onnx", "--imgsz", "100", "100"], "each a multiple of 32"),
    (["--format", "onnx", "--opset", "11"], "supported opsets are 18..23"),
    (["--format", "onnx", "--max-dets", "5000"], "--max-dets 5000: expected 1..300"),
])
def test_invalid_options_fail_cleanly(tmp_path: Path, checkpoint: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = _run("--checkpoint", str(checkpoint), "--out", str(out / "m.bin"), *extra)
    assert code == 1 and message in err
    assert _files(out) == []


def test_checkpoints_of_the_wrong_kind_or_version(tmp_path: Path, checkpoint: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    newer = tmp_path / "newer.pt"
    ckpt = torch.load(checkpoint, weights_only=True)
    torch.save({**ckpt, "version": 99}, newer)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    out = tmp_path / "out"
    out.mkdir()
    cases = [(foreign, "field 'format' is None; expected 'boxseg-checkpoint'"), (newer, "field 'version' is 99"),
             (text, "not a torch checkpoint"), (tmp_path / "missing.pt", "no such file")]
    for path, message in cases:
        code, _, err = _run("--checkpoint", str(path), "--format", "onnx", "--out", str(out / "m.onnx"))
        assert code == 1 and message in err, (path, err)
    assert _files(out) == []


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    model = make_student()
    bad = write_checkpoint(tmp_path / "bad.pt", model, model={"head.cls_logits.weight": torch.zeros(1)})
    code, _, err = _run("--checkpoint", str(bad), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert code == 1 and "'model' weights do not fit this model" in err
    assert not (tmp_path / "m.onnx").exists()


def test_unwritable_output_paths(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for out, message in [(tmp_path / "afile" / "m.onnx", "is not a folder"), (tmp_path, "is a directory"),
                         (tmp_path / "no" / "m.onnx", "does not exist")]:
        code, _, err = _run("--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out))
        assert code == 1 and message in err
    assert _files(tmp_path) == ["afile"]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_without_tensorrt_says_how_to_get_it(tmp_path: Path, checkpoint: Path) -> None:
    code, _, err = _run("--checkpoint", str(checkpoint), "--format", "tensorrt", "--out", str(tmp_path / "m.engine"))
    assert code == 1 and "pip install 'boxseg[tensorrt]'" in err
    assert _files(tmp_path) == []


def _dummy_build(model, **kwargs):
    """A cheap stand-in for the real export (the failure paths under test come after it)."""
    from boxseg.export.onnx import OnnxExportInfo

    graph = oh.make_graph([oh.make_node("Identity", ["images"], ["boxes"])], "g",
                          [oh.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1])],
                          [oh.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, [1])])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10)
    return proto, OnnxExportInfo(seconds=0.0, opset=18, dynamic=True, max_dets=20, min_side=64, num_nodes=1)


def test_a_crash_while_writing_leaves_no_partial_file(tmp_path: Path, checkpoint: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import boxseg.export.onnx as onnx_export

    def crash(proto, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_export, "build_onnx_model", _dummy_build)
    monkeypatch.setattr(onnx, "save_model", crash)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--format", "onnx",
                                       "--out", str(out / "m.onnx")])
    assert isinstance(result.exception, OSError)
    assert _files(out) == []


def test_failed_verification_writes_nothing(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boxseg.export.onnx as onnx_export

    monkeypatch.setattr(onnx_export, "build_onnx_model", _dummy_build)
    monkeypatch.setattr(onnx_export, "verify_for_export",
                        lambda *a, **k: {"passed": False, "failures": ["boxes differ by 3 px"], "cases": []})
    code, _, err = _run("--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                        "--verify")
    assert code == 1 and "--verify failed; nothing was written" in err and "boxes differ by 3 px" in err
    assert _files(tmp_path) == []


def test_static_export_with_verify_and_json(tmp_path: Path, checkpoint: Path) -> None:
    import onnxruntime as ort

    out = tmp_path / "static.onnx"
    code, stdout, err = _run("--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "--static",
                             "--batch", "2", "--imgsz", "96", "128", "--max-dets", "10", "--verify", "--json")
    assert code == 0, err
    result = json.loads(stdout)  # exactly one JSON object on stdout
    assert result["format"] == "onnx" and Path(result["path"]) == out and result["size_bytes"] == out.stat().st_size
    assert result["verification"]["passed"] and [c["batch"] for c in result["verification"]["cases"]] == [2]
    assert result["metadata"]["boxseg.max_dets"] == "10" and result["details"]["tensorrt_problems"] == []
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 96, 128]
    assert [o.shape for o in session.get_outputs()][:2] == [[2, 10, 4], [2, 10]]
    assert _files(tmp_path) == ["static.onnx"]


def test_a_pretrained_config_loads_without_its_weight_file(tmp_path: Path) -> None:
    """The run's ImageNet file is not needed (nor read) at export time; the norm kind it implied is kept."""
    from boxseg.export.source import load_student

    from boxseg.model.condinst import CondInst
    from boxseg.model.config import ModelConfig

    model = CondInst(ModelConfig.tiny(backbone_norm="frozen_bn")).eval()
    ckpt = write_checkpoint(tmp_path / "s.pt", model)
    raw = torch.load(ckpt, weights_only=True)
    raw["config"]["model"].update(pretrained=str(tmp_path / "gone" / "resnet18.pth"), backbone_norm="auto")
    torch.save(raw, ckpt)
    loaded = load_student(ckpt).model
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
