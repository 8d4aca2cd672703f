"""Checkpoint files: atomic writes, validation of foreign files, model-config checks, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from boxseg.train import checkpoint as C
from torch import nn


def _ckpt(model: nn.Module, iteration: int = 3) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return C.make_checkpoint(model=model, iteration=iteration, config={"model": {"backbone": "resnet18"}},
                             class_names=["a", "b"], optimizer=opt, rng=C.capture_rng(), cat_ids=[1, 2])


def test_save_load_round_trip(tmp_path):
    model = nn.Linear(3, 2)
    path = C.save_checkpoint(_ckpt(model), tmp_path / "ck" / "last.pt")
    ck = C.load_checkpoint(path)
    assert ck["format"] == C.FORMAT and ck["version"] == C.VERSION and ck["iteration"] == 3
    assert ck["class_names"] == ["a", "b"] and ck["cat_ids"] == [1, 2] and ck["teacher"] is None
    assert torch.equal(ck["model"]["weight"], model.weight)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    C.save_checkpoint(_ckpt(nn.Linear(3, 2), iteration=1), path)
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written ...
        raise OSError("disk full")  # ... and the process dies

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        C.save_checkpoint(_ckpt(nn.Linear(3, 2), iteration=2), path)
    assert path.read_bytes() == before
    assert C.load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(C.CheckpointError, match="no such file"):
        C.load_checkpoint(tmp_path / "missing.pt")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(C.CheckpointError, match="not a readable torch checkpoint"):
        C.load_checkpoint(text)
    plain = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), plain)  # a bare state dict, e.g. torchvision weights
    with pytest.raises(C.CheckpointError, match="field 'format' is None; expected 'boxseg-checkpoint'"):
        C.load_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({**_ckpt(nn.Linear(2, 2)), "version": 99}, future)
    with pytest.raises(C.CheckpointError, match="'version' is 99"):
        C.load_checkpoint(future)


def test_model_mismatch_is_named(tmp_path):
    ck = {"config": {"model": {"backbone": "resnet18", "num_classes": 4, "pretrained": True}}}
    C.check_same_model(ck, {"backbone": "resnet18", "num_classes": 4, "pretrained": False}, "x.pt")  # no error
    with pytest.raises(C.CheckpointError, match=r"another model:\n  model.num_classes: 4 in the checkpoint, 80"):
        C.check_same_model(ck, {"backbone": "resnet18", "num_classes": 80}, "x.pt")
    with pytest.raises(C.CheckpointError, match="shape mismatch weight: \\(2, 3\\) in the checkpoint"):
        C.load_model_weights(nn.Linear(4, 2), nn.Linear(3, 2).state_dict(), "x.pt")
    with pytest.raises(C.CheckpointError, match="missing keys \\['bias'\\]"):
        C.load_model_weights(nn.Linear(3, 2), {"weight": torch.zeros(2, 3)}, "x.pt")


def test_rng_state_round_trip_through_a_file(tmp_path):
    ck = _ckpt(nn.Linear(1, 1))  # built first: initialising a layer draws from the torch generator
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    C.save_checkpoint({**ck, "rng": C.capture_rng()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    C.restore_rng(C.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
