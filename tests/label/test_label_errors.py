"""Bad inputs to `boxseg label` answer with errors that name the problem (and never a traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from label_helpers import make_checkpoint_file

from boxseg.cli import main


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _run(*args: str):
    return CliRunner().invoke(main, ["label", "--no-progress", *args])


def _edit(data: Path, fn) -> None:  # type: ignore[no-untyped-def]
    p = data / "annotations.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


@pytest.mark.parametrize("case, expected", [
    ("missing image", "image file not found"),
    ("corrupt image", "cannot read image"),
    ("truncated image", "cannot read image"),
    ("box outside image", "lies outside image"),
    ("unknown category", "unknown category id 99"),
])
def test_bad_datasets(case: str, expected: str, tmp_path: Path, label_data: Path, checkpoint: Path):
    data = _copy(label_data, tmp_path / "data")
    first = min((data / "images").iterdir())
    if case == "missing image":
        first.unlink()
    elif case == "corrupt image":
        first.write_bytes(b"not an image at all")
    elif case == "truncated image":
        first.write_bytes(first.read_bytes()[:200])  # a valid header, then nothing
    elif case == "box outside image":
        _edit(data, lambda d: d["annotations"][0].update(bbox=[100.0, 100.0, 5.0, 5.0]))
    else:
        _edit(data, lambda d: d["annotations"][0].update(category_id=99))
    r = _run("--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "out"))
    assert r.exit_code == 1, r.output
    assert expected in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_wrong_kind_of_checkpoint(tmp_path: Path, label_data: Path, class_names: list[str]):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    wrong_classes = make_checkpoint_file(tmp_path / "classes.pt", ["a", "b"])
    for path, expected in ((junk, "not a torch checkpoint"), (other, "field 'format'"),
                           (wrong_classes, "trained on classes")):
        r = _run("--checkpoint", str(path), "--data", str(label_data), "--out", str(tmp_path / "out"))
        assert r.exit_code == 1 and expected in r.output and "Traceback" not in r.output, (path, r.output)
    r = _run("--checkpoint", str(label_data), "--data", str(label_data), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and "is a directory" in r.output


def test_usage_errors(tmp_path: Path, label_data: Path, checkpoint: Path):
    r = _run("--data", str(label_data), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "needs --checkpoint" in r.output
    r = _run("--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "--data" in r.output
    r = _run("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(tmp_path / "o"),
             "--box-agreement", "gate:2")
    assert r.exit_code == 2 and "gate:T" in r.output
    r = _run("--checkpoint", str(checkpoint), "--data", str(label_data), "--out", str(label_data))
    assert r.exit_code == 1 and "dataset's own folder" in r.output
    r = _run("--out", str(tmp_path / "nothing"), "--apply-review", str(checkpoint))
    assert r.exit_code == 1 and "no such file" in r.output
