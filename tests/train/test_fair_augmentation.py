"""One student photometric setting for every preset: the plain supervised method (BoxInst, CondInst) applies
`cfg.student` too, keeps the un-jittered pixels for the pairwise colour term, and is deterministic per iteration."""

from __future__ import annotations

import torch
from boxseg.train.config import load_config
from boxseg.train.loop import Method


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(2, 3, 32, 32)
    images[:, :, :24, :28] = torch.rand(2, 3, 24, 28, generator=g) * 255
    return {"images": images, "image_sizes": [(24, 28), (24, 28)], "image_ids": [7, 9], "targets": []}


def _method(*overrides: str) -> Method:
    cfg = load_config("boxinst", overrides=list(overrides))
    return Method(cfg, torch.nn.Identity(), lambda *a: {})


def test_supervised_presets_apply_the_student_photometric_augmentation():
    m = _method("student.color_jitter.p=1.0", "student.grayscale.p=0.0", "student.gaussian_blur.p=0.0")
    batch = _batch()
    out = m.prepare_batch(batch, 3)
    assert torch.equal(out["color_images"], batch["images"])  # the pairwise term reads the original pixels
    assert not torch.equal(out["images"][:, :, :24, :28], batch["images"][:, :, :24, :28])
    assert torch.equal(out["images"][:, :, 24:], batch["images"][:, :, 24:])  # padding untouched
    again = m.prepare_batch(_batch(), 3)
    assert torch.equal(again["images"], out["images"])  # same seed and iteration, same draw
    assert not torch.equal(m.prepare_batch(_batch(), 4)["images"], out["images"])


def test_no_photometric_setting_leaves_the_batch_alone():
    m = _method("student.color_jitter.p=0.0", "student.grayscale.p=0.0", "student.gaussian_blur.p=0.0")
    batch = _batch()
    assert m.prepare_batch(batch, 0) is batch


def test_every_shipped_preset_gets_the_same_student_setting_from_the_overlay():
    settings = {p: load_config(p, "synthetic_cpu").student for p in
                ("boxinst", "condinst", "boxteacher", "boxseg", "boxinst_pc")}
    assert len({repr(s) for s in settings.values()}) == 1


def test_the_jitter_of_an_image_does_not_depend_on_its_batch():
    """Keyed by image id: the same image gets the same draw alone or beside another (DDP splits batches)."""
    m = _method("student.color_jitter.p=1.0", "student.grayscale.p=0.0", "student.gaussian_blur.p=0.0")
    pair = m.prepare_batch(_batch(), 5)
    single = _batch()
    single = {"images": single["images"][1:], "image_sizes": [(24, 28)], "image_ids": [9], "targets": []}
    assert torch.equal(m.prepare_batch(single, 5)["images"][0], pair["images"][1])
