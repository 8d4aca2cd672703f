"""Pasting stride-4 masks into the image, only inside each box, against a full-image bilinear reference."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from boxseg.model.postprocess import paste_masks


def reference_paste(masks: torch.Tensor, boxes: torch.Tensor, out_size: tuple[int, int],
                    input_size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Upsample every whole mask straight to the output size (half-pixel bilinear; exact when the input frame is
    4x the mask grid), threshold, then keep the box's pixel range: the plain D*H*W formulation."""
    assert input_size == (masks.shape[1] * 4, masks.shape[2] * 4)
    out = F.interpolate(masks[:, None].double(), size=out_size, mode="bilinear", align_corners=False)[:, 0]
    out = out > threshold
    sy, sx = input_size[0] / out_size[0], input_size[1] / out_size[1]
    keep = torch.zeros_like(out)
    for i, (x1, y1, x2, y2) in enumerate((boxes.double() / torch.tensor([sx, sy, sx, sy])).tolist()):
        r0, r1 = max(0, math.floor(y1)), min(out_size[0], math.ceil(y2))
        c0, c1 = max(0, math.floor(x1)), min(out_size[1], math.ceil(x2))
        keep[i, r0:r1, c0:c1] = True
    return out & keep


def test_paste_in_the_input_frame_is_the_box_region_of_the_upsampled_mask() -> None:
    masks = torch.zeros(2, 16, 16)
    masks[0, 2:10, 3:12] = 1.0
    masks[1] = 1.0  # a full mask is cut to its box
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [10.0, 20.0, 30.5, 41.0]])
    out = paste_masks(masks, boxes, (64, 64))
    assert out.shape == (2, 64, 64) and out.dtype == torch.bool
    # mask pixels 3..11 (x) and 2..9 (y) cover image columns 12..47 and rows 8..39; bilinear gives 0.625 on that
    # outer ring of pixels but 0.39 at its four corners, and < 0.5 beyond it
    region = torch.zeros(64, 64, dtype=torch.bool)
    region[8:40, 12:48] = True
    for y, x in ((8, 12), (8, 47), (39, 12), (39, 47)):
        region[y, x] = False
    assert torch.equal(out[0], region)
    assert torch.equal(out, reference_paste(masks, boxes, (64, 64), (64, 64)))
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[20:41, 10:31] = True
    assert torch.equal(out[1], expected)


def test_paste_to_the_original_size_matches_the_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = F.avg_pool2d(torch.rand(3, 1, 20, 24, generator=gen), 3, 1, 1)[:, 0]
    masks = (masks - masks.mean()) * 6 + 0.5
    boxes = torch.tensor([[4.0, 6.0, 50.0, 60.0], [0.0, 0.0, 90.0, 70.0], [33.3, 10.7, 47.9, 75.2]])
    out = paste_masks(masks, boxes, out_size=(100, 125), input_size=(80, 96))
    ref = reference_paste(masks, boxes, (100, 125), (80, 96))
    assert int((out != ref).sum()) <= 2  # at most a float-rounding tie at the threshold
    assert int(out.sum()) > 0


def test_paste_handles_no_detections_and_empty_boxes() -> None:
    assert paste_masks(torch.zeros(0, 8, 8), torch.zeros(0, 4), (32, 32)).shape == (0, 32, 32)
    out = paste_masks(torch.ones(1, 8, 8), torch.tensor([[5.0, 5.0, 5.0, 9.0]]), (32, 32))
    assert not bool(out.any())
