"""`boxseg label` is resumable: an interrupted run continued with --resume writes the file an uninterrupted run
writes, and finished output is never replaced or mixed with other options by accident."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boxseg.cli import main


def test_resume_gives_the_same_file_as_one_uninterrupted_run(tmp_path: Path, label_data: Path, checkpoint: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    import boxseg.train.label as L

    whole = L.label_dataset(label_data, tmp_path / "whole", checkpoint, L.LabelOptions(tta="flip"), progress=False)
    real = L._label_one
    calls: list[int] = []

    def dies_at_the_fourth_image(ds, i, labeller, options):  # type: ignore[no-untyped-def]
        calls.append(i)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(ds, i, labeller, options)

    monkeypatch.setattr(L, "_label_one", dies_at_the_fourth_image)
    with pytest.raises(KeyboardInterrupt):
        L.label_dataset(label_data, tmp_path / "cut", checkpoint, L.LabelOptions(tta="flip"), save_every=2,
                        progress=False)
    state = tmp_path / "cut" / ".boxseg-label"
    assert not (tmp_path / "cut" / "annotations.json").exists()
    # parts every 2 images, and the third finished image saved on the way out
    assert sorted(p.name for p in state.glob("part-*.json")) == ["part-000000.json", "part-000001.json"]
    assert sum(len(json.loads(p.read_text())) for p in state.glob("part-*.json")) == 3

    monkeypatch.setattr(L, "_label_one", real)
    with pytest.raises(L.LabelError, match="--resume"):  # an unfinished run is not restarted silently
        L.label_dataset(label_data, tmp_path / "cut", checkpoint, L.LabelOptions(tta="flip"), progress=False)
    with pytest.raises(L.LabelError, match="tta"):  # nor continued with other options
        L.label_dataset(label_data, tmp_path / "cut", checkpoint, L.LabelOptions(tta="none"), resume=True,
                        progress=False)
    resumed = L.label_dataset(label_data, tmp_path / "cut", checkpoint, L.LabelOptions(tta="flip"), resume=True,
                              progress=False)
    assert resumed["resumed_images"] == 3 and whole["resumed_images"] == 0
    assert (tmp_path / "cut" / "annotations.json").read_bytes() == (tmp_path / "whole" / "annotations.json").read_bytes()
    assert not state.exists()


def test_finished_output_needs_resume_or_overwrite(tmp_path: Path, label_data: Path, checkpoint: Path):
    args = ["label", "--no-progress", "--checkpoint", str(checkpoint), "--data", str(label_data), "--out",
            str(tmp_path / "o")]
    runner = CliRunner()
    assert runner.invoke(main, args).exit_code == 0
    before = (tmp_path / "o" / "annotations.json").read_bytes()
    r = runner.invoke(main, args)
    assert r.exit_code == 1 and "--overwrite" in r.output
    r = runner.invoke(main, [*args, "--resume"])
    assert r.exit_code == 0 and "already complete" in r.output
    r = runner.invoke(main, [*args, "--resume", "--tta", "flip"])
    assert r.exit_code == 1 and "other inputs or options" in r.output and "tta" in r.output
    assert (tmp_path / "o" / "annotations.json").read_bytes() == before
    r = runner.invoke(main, [*args, "--overwrite", "--tta", "flip"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "annotations.json").read_text())["boxseg_label"]["tta"] == "flip"
