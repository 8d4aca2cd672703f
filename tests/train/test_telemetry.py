"""The teacher-student telemetry helpers against hand-computed values."""

from __future__ import annotations

import math

import torch
from boxseg.train.telemetry import best_gt_scores, downsample_gt, mask_iou, summarize, window_mean


def test_best_gt_score_takes_the_gt_class_among_overlapping_locations_only():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # IoU 1 with GT 0
                          [0.0, 0.0, 10.0, 4.0],     # IoU 0.4 with GT 0: too loose, ignored
                          [20.0, 20.0, 30.0, 30.0]])  # IoU 1 with GT 1
    scores = torch.tensor([[0.3, 0.9], [0.8, 0.8], [0.6, 0.1]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    got = best_gt_scores(boxes, scores, gt, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(got, torch.tensor([0.3, 0.1, 0.0]))  # the GT class, not the best class
    assert best_gt_scores(boxes, scores, gt[:0], torch.tensor([], dtype=torch.long)).shape == (0,)


def test_mask_iou_and_downsampling():
    pred = torch.zeros(2, 4, 4)
    pred[0, :2, :] = 0.9        # 8 cells
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :, :2] = True         # 8 cells, 4 shared
    torch.testing.assert_close(mask_iou(pred, gt), torch.tensor([4 / 12, 1.0]))  # two empties agree
    full = torch.zeros(1, 8, 8, dtype=torch.bool)
    full[0, :4, :4] = True
    assert downsample_gt(full, 4, (2, 2)).tolist() == [[[1.0, 0.0], [0.0, 0.0]]]


def test_summary_of_one_batch_and_a_window():
    valid = torch.tensor([True, False, True, True])
    w = torch.tensor([0.6, 0.0, 0.8, 1.0])
    s = summarize(4, valid, w, torch.tensor([0.1, 0.2, 0.3, 0.4]), bank_size=5, pastes=3, num_images=2,
                  ious=torch.tensor([0.5, 0.7]))
    assert s["pseudo_valid_frac"] == 0.75 and math.isclose(s["w_mean"], 0.8, rel_tol=1e-6)
    assert math.isclose(s["w_p50"], 0.8, rel_tol=1e-6) and math.isclose(s["teacher_score_p50"], 0.25, rel_tol=1e-6)
    assert s["pastes_per_image"] == 1.5 and math.isclose(s["pseudo_iou"], 0.6, rel_tol=1e-6)
    none = summarize(3, torch.zeros(3, dtype=torch.bool), torch.zeros(3), torch.zeros(3), 0, 0, 1, None)
    assert none["pseudo_valid_frac"] == 0.0 and math.isnan(none["w_mean"]) and math.isnan(none["pseudo_iou"])
    mean = window_mean([s, none])
    assert mean["pseudo_valid_frac"] == 0.375 and math.isclose(mean["w_mean"], 0.8, rel_tol=1e-6)
    assert window_mean([none])["w_mean"] is None  # all-NaN -> JSON null
