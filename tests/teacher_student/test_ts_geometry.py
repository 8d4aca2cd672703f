"""Teacher -> student frame mapping (docs/method.md "Views"; "Unit-test checks" item 10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from boxseg.train.geometry import ViewGeometry, map_boxes, map_masks, resize_shortest_edge, teacher_geometry


def _blob(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.exp(-(((x - 0.3 * w) / (0.12 * w)) ** 2 + ((y - 0.55 * h) / (0.2 * h)) ** 2))[None]


def test_resize_rule():
    assert resize_shortest_edge((300, 400), 800, 1333) == (800, 1067)
    assert resize_shortest_edge((300, 900), 800, 1333) == (444, 1333)  # long side capped
    assert teacher_geometry((300, 400)).flip is False


def test_teacher_to_flipped_640_student_and_back_matches_original():
    orig_size = (300, 400)
    original = _blob(*orig_size)
    ident = ViewGeometry(orig_size, orig_size)
    teacher = teacher_geometry(orig_size)
    student = ViewGeometry(orig_size, resize_shortest_edge(orig_size, 640, 1333), flip=True)
    t_mask = map_masks(original, ident, teacher, dst_stride=4)  # what the teacher's stride-4 head would give
    assert t_mask.shape == (1, 200, 267)
    s_mask = map_masks(t_mask, teacher, student, src_stride=4)
    assert s_mask.shape == (1, 640, 853)
    back = map_masks(s_mask, student, ident)
    assert (back - original).abs().max() < 0.02  # bilinear tolerance
    # The student view really is flipped: its mass sits on the right.
    assert s_mask[0, :, 427:].sum() > 3 * s_mask[0, :, :427].sum()
    # A binary disk survives the round trip with IoU > 0.95.
    disk = (original > 0.5).float()
    back_disk = map_masks(map_masks(map_masks(disk, ident, teacher, dst_stride=4), teacher, student, 4), student,
                          ident) > 0.5
    inter = (back_disk & (disk > 0)).sum()
    union = (back_disk | (disk > 0)).sum()
    assert inter / union > 0.95


def test_pure_resize_equals_interpolate_and_pure_flip_is_exact():
    m = torch.rand(2, 10, 14)
    a = ViewGeometry((10, 14), (10, 14))
    b = ViewGeometry((10, 14), (20, 28))
    torch.testing.assert_close(map_masks(m, a, b), F.interpolate(m[None], size=(20, 28), mode="bilinear",
                                                                  align_corners=False)[0])
    f = ViewGeometry((10, 14), (10, 14), flip=True)
    torch.testing.assert_close(map_masks(m, a, f), m.flip(-1))


def test_padding_and_outside_read_zero():
    m = torch.ones(1, 8, 8)
    a = ViewGeometry((8, 8), (8, 8))
    out = map_masks(m, a, a, out_shape=(12, 12))  # padded destination batch
    assert out[0, :8, :8].min() == 1 and out[0, 8:].abs().sum() == 0 and out[0, :, 8:].abs().sum() == 0
    assert map_masks(torch.zeros(0, 8, 8), a, a).shape == (0, 8, 8)


def test_boxes_round_trip_and_flip():
    orig = (300, 400)
    teacher = teacher_geometry(orig)
    student = ViewGeometry(orig, resize_shortest_edge(orig, 640, 1333), flip=True)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 400.0, 300.0]])
    in_t = teacher.boxes_from_original(boxes)
    in_s = map_boxes(in_t, teacher, student)
    sx = 853 / 400
    torch.testing.assert_close(in_s[0, 0], torch.tensor(853 - 50 * sx))
    torch.testing.assert_close(in_s[0, 2], torch.tensor(853 - 10 * sx))
    torch.testing.assert_close(in_s[1], torch.tensor([0.0, 0.0, 853.0, 640.0]))
    torch.testing.assert_close(map_boxes(in_s, student, teacher), in_t, atol=1e-4, rtol=0)
