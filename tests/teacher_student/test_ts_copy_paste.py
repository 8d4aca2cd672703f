"""Peer-assisted Copy-paste: memory bank and annotation updates (docs/method.md "Unit-test checks" items 6-7),
options."""

from __future__ import annotations

import pytest
import torch
from boxseg.train.copy_paste import (
    MemoryBank,
    PeerCopyPaste,
    Tutor,
    collect_tutors,
    tutor_eligible,
    update_annotations,
)
from boxseg.train.pseudo.config import PCConfig


def _tutor(cls: int = 3, w: float = 0.9, size: int = 12, value: int = 200) -> Tutor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[2:-2, 2:-2] = True
    return Tutor(patch=torch.full((3, size, size), value, dtype=torch.uint8), mask=mask, cls=cls, w=w, scale=1.0)


def _scene(h: int = 64, w: int = 64):
    """A learner (rectangle mask filling most of its box), a small object, and an object without a pseudo mask."""
    image = torch.full((3, h, w), 50, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [44.0, 44.0, 50.0, 50.0], [52.0, 4.0, 62.0, 20.0]])
    masks = torch.zeros(3, h, w)
    masks[0, 12:38, 12:38] = 0.9
    masks[1, 45:49, 45:49] = 0.8
    t = {"boxes": boxes, "classes": torch.tensor([0, 1, 2]), "pseudo_masks": masks,
         "pseudo_weights": torch.tensor([0.7, 0.9, 0.0]), "pseudo_valid": torch.tensor([True, True, False])}
    return image, t


def test_bank_fifo_81_pushes():
    bank = MemoryBank(80)
    for i in range(81):
        bank.push(_tutor(cls=i))
    assert len(bank) == 80 and bank.entries[0].cls == 1 and bank.entries[-1].cls == 80
    state = bank.state_dict()
    other = MemoryBank(80)
    other.load_state_dict(state)
    assert [e.cls for e in other.entries] == list(range(1, 81))


def test_only_eligible_objects_are_pushed():
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0],    # isolated, w 0.9 -> pushed
                          [20.0, 20.0, 30.0, 30.0],  # w 0.8 == tau -> not pushed (needs w > tau)
                          [40.0, 40.0, 50.0, 50.0],  # overlaps the next box -> not pushed
                          [48.0, 48.0, 60.0, 60.0],  # overlaps the previous box -> not pushed
                          [2.0, 40.0, 12.0, 50.0]])  # isolated but invalid -> not pushed
    masks = torch.full((5, 16, 16), 0.9)  # stride 4
    weights = torch.tensor([0.9, 0.8, 0.95, 0.95, 0.95])
    valid = torch.tensor([True, True, True, True, False])
    bank = MemoryBank(80)
    cfg = PCConfig()
    for _ in range(81):
        collect_tutors(bank, image, boxes, torch.arange(5), masks, weights, valid, cfg, mask_stride=4, scale=2.0)
    assert len(bank) == 80 and {e.cls for e in bank.entries} == {0}
    e = bank.entries[0]
    assert e.patch.shape == (3, 10, 10) and torch.equal(e.patch, image[:, 2:12, 2:12]) and e.mask.all()
    assert e.scale == 2.0 and e.w == pytest.approx(0.9)
    # Table 5 arm "random selection": any object with a valid mask.
    assert tutor_eligible(boxes, weights, valid, PCConfig(selection="random")).tolist() == [True] * 4 + [False]


def test_nonoverlap_variants():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [9.8, 0.0, 20.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    weights = torch.full((3,), 0.9)
    valid = torch.ones(3, dtype=torch.bool)
    assert tutor_eligible(boxes, weights, valid, PCConfig()).tolist() == [False, False, True]
    # Coverage: A and B share one pixel column, 1/20 of A and 1/21 of B.
    wide = torch.tensor([[0.0, 0.0, 20.0, 10.0], [19.0, 0.0, 40.0, 10.0], [60.0, 60.0, 70.0, 70.0]])
    cov = tutor_eligible(wide, weights, valid, PCConfig(nonoverlap="box_coverage", eps_cov=0.05))
    assert cov.tolist() == [True, True, True]
    cov = tutor_eligible(wide, weights, valid, PCConfig(nonoverlap="box_coverage", eps_cov=0.04))
    assert cov.tolist() == [False, False, True]
    masks = torch.zeros(3, 50, 50)
    masks[0, 2:8, 2:8] = 0.9
    masks[1, 2:8, 12:18] = 0.9
    masks[2, 42:48, 42:48] = 0.9
    md = tutor_eligible(boxes, weights, valid, PCConfig(nonoverlap="mask_disjoint"), masks=masks,
                        image_size=(50, 50))
    assert md.tolist() == [True, True, True]
    border = tutor_eligible(boxes, weights, valid, PCConfig(reject_border_tutors=True), image_size=(50, 50))
    assert border.tolist() == [False, False, False]


def test_update_annotations_cut_drop_tighten_add():
    _, t = _scene()
    full = torch.zeros(64, 64, dtype=torch.bool)
    full[0:50, 30:50] = True  # covers the learner's right part and all of object 1
    new, dropped = update_annotations(t, full, tutor_cls=7, tutor_w=0.95, cfg=PCConfig(box_update="mask"))
    assert dropped == [1]
    assert new["classes"].tolist() == [0, 2, 7] and new["is_tutor"].tolist() == [False, False, True]
    learner = new["pseudo_masks"][0]
    assert (learner[full] == 0).all()  # no learner pixel under the tutor
    # Learner box: tight box of the visible mask (x 12..29 -> [12, 30), y 12..37 -> [12, 38)).
    assert new["boxes"][0].tolist() == [12.0, 12.0, 30.0, 38.0]
    assert new["boxes"][1].tolist() == [52.0, 4.0, 62.0, 20.0]  # untouched object without a mask
    assert new["boxes"][2].tolist() == [30.0, 0.0, 50.0, 50.0]  # tutor: tight box of its mask
    assert torch.equal(new["pseudo_masks"][2] > 0, full)
    assert new["pseudo_weights"][2].item() == pytest.approx(0.95) and new["pseudo_valid"].tolist() == [True, False, True]
    keep, _ = update_annotations(t, full, 7, 0.95, PCConfig(box_update="keep"))
    assert keep["boxes"][0].tolist() == [10.0, 10.0, 40.0, 40.0]
    bmp, _ = update_annotations(t, full, 7, 0.95, PCConfig())
    assert bmp["boxes"][0].tolist() == [10.0, 10.0, 30.0, 40.0]  # the default: the box region minus the paste
    # An object without a mask: its box minus the paste.
    full2 = torch.zeros(64, 64, dtype=torch.bool)
    full2[4:20, 56:64] = True
    nm, _ = update_annotations(t, full2, 7, 0.95, PCConfig())
    assert nm["boxes"][2].tolist() == [52.0, 4.0, 56.0, 20.0]
    # The learner keeps 18 of its 26 mask columns (0.69).
    _, dropped = update_annotations(t, full, 7, 0.95, PCConfig(min_visible_frac=0.65))
    assert dropped == [1]
    _, dropped = update_annotations(t, full, 7, 0.95, PCConfig(min_visible_frac=0.7))
    assert dropped == [0, 1]


@pytest.mark.parametrize("seed", range(8))
def test_paste_keeps_image_and_annotations_consistent(seed):
    image, t = _scene()
    bank = MemoryBank(80)
    bank.push(_tutor(size=16))
    pc = PeerCopyPaste(PCConfig())
    out, new, info = pc(image, t, bank, student_scale=1.0, generator=torch.Generator().manual_seed(seed))
    if info.pasted == 0:
        assert info.skipped == 1 and torch.equal(out, image)
        return
    full = info.tutor_masks[0]
    (l_old,) = info.learners
    assert l_old not in info.dropped
    l_new = l_old - sum(d < l_old for d in info.dropped)
    assert (out[:, full] == 200).all() and (out[:, ~full] == 50).all()  # tutor pixels only, hard paste
    tutor_i = int(torch.nonzero(new["is_tutor"]).flatten())
    assert tutor_i == new["boxes"].shape[0] - 1 and new["classes"][tutor_i] == 3
    for i in range(tutor_i):
        assert (new["pseudo_masks"][i][full] == 0).all()  # no object keeps mask pixels under the tutor
    before = t["pseudo_masks"][l_old] > 0.5
    learner = new["pseudo_masks"][l_new] > 0.5
    assert (before & full).any()  # the tutor overlaps the learner's mask
    assert learner.sum() >= 0.5 * before.sum()  # rho_min_visible
    # The tutor's box is tight around its mask; the learner's is its GT box minus the pasted pixels (default
    # pc.box_update=box_minus_paste), so it still holds the learner's whole visible mask.
    x0, y0, x1, y1 = (int(v) for v in t["boxes"][l_old].tolist())
    region = torch.zeros_like(full)
    region[y0:y1, x0:x1] = True
    for i, m in ((tutor_i, full), (l_new, region & ~full)):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert new["boxes"][i].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1,
                                            ys.max().item() + 1]


def test_deterministic_and_skips():
    image, t = _scene()
    bank = MemoryBank(80)
    for c in range(5):
        bank.push(_tutor(cls=c, size=10 + c))
    pc = PeerCopyPaste(PCConfig(pastes_per_image=2))
    a = pc(image, t, bank, 1.0, torch.Generator().manual_seed(11))
    b = pc(image, t, bank, 1.0, torch.Generator().manual_seed(11))
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    # Empty bank, PC disabled, no valid learner: unchanged.
    for bank_, cfg, tt in ((MemoryBank(80), PCConfig(), t), (bank, PCConfig(enabled=False), t),
                           (bank, PCConfig(), {**t, "pseudo_valid": torch.zeros(3, dtype=torch.bool)})):
        out, new, info = PeerCopyPaste(cfg)(image, tt, bank_, 1.0, torch.Generator().manual_seed(0))
        assert torch.equal(out, image) and info.pasted == 0 and new["boxes"].shape[0] == 3
    # rho_min = 1: any overlap hides part of the learner, so every placement is rejected.
    out, new, info = PeerCopyPaste(PCConfig(rho_min_visible=1.0))(image, t, bank, 1.0, torch.Generator().manual_seed(0))
    assert info.pasted == 0 and info.skipped == 1


def test_random_placement_scale_rule_and_feather():
    image, t = _scene(96, 96)
    bank = MemoryBank(80)
    tut = _tutor(size=20)
    tut.scale = 2.0  # cut from a view twice the original size; the student view is at 1.0 -> half size
    bank.push(tut)
    pc = PeerCopyPaste(PCConfig(placement="random", tutor_flip=0.0))
    _, new, info = pc(image, t, bank, 1.0, torch.Generator().manual_seed(0))
    assert info.pasted == 1 and info.learners == [-1]
    box = new["boxes"][-1]
    assert (box[2] - box[0]).item() == 8 and (box[3] - box[1]).item() == 8  # 16-px mask at half scale
    # A tutor larger than the image is shrunk to fit.
    big = MemoryBank(80)
    big.push(_tutor(size=200))
    _, new, info = PeerCopyPaste(PCConfig(placement="random"))(image, t, big, 1.0, torch.Generator().manual_seed(0))
    assert info.pasted == 1 and (new["boxes"][-1][2:] <= 96).all()
    # Feather blend: tutor pixels are pure tutor, a ring outside gets mixed colours.
    image2, t2 = _scene()
    bank2 = MemoryBank(80)
    bank2.push(_tutor(size=16))
    out, _, info = PeerCopyPaste(PCConfig(blend="feather"))(image2, t2, bank2, 1.0, torch.Generator().manual_seed(1))
    full = info.tutor_masks[0]
    assert (out[:, full] == 200).all()
    ring = ((out[0] != 50) & ~full).sum()
    assert ring > 0 and ((out[0] > 50) & (out[0] < 200)).sum() == ring


def test_inverse_quality_prefers_low_quality_learners():
    image, t = _scene()
    t["pseudo_weights"] = torch.tensor([0.99, 0.51, 0.0])
    bank = MemoryBank(80)
    bank.push(_tutor(size=6))
    pc = PeerCopyPaste(PCConfig(learner_sampling="inverse_quality", rho_min_visible=0.0))
    picks = [pc(image, t, bank, 1.0, torch.Generator().manual_seed(s))[2].learners for s in range(40)]
    flat = [p for lst in picks for p in lst]
    assert flat.count(1) > 3 * flat.count(0)


def test_default_box_update_keeps_the_gt_box_unless_whole_edge_lines_are_covered():
    """A paste that covers part of the learner but no whole row or column at its box edge leaves the exact GT box
    alone by default; the old default (`mask`) replaced it with the tight box of the imperfect pseudo mask."""
    _, t = _scene()
    full = torch.zeros(64, 64, dtype=torch.bool)
    full[20:30, 20:30] = True  # inside the learner's box [10, 10, 40, 40], touching no edge
    new, _ = update_annotations(t, full, 7, 0.95, PCConfig())
    assert new["boxes"][0].tolist() == [10.0, 10.0, 40.0, 40.0]
    old, _ = update_annotations(t, full, 7, 0.95, PCConfig(box_update="mask"))
    assert old["boxes"][0].tolist() != [10.0, 10.0, 40.0, 40.0]  # the pseudo mask's tight box
