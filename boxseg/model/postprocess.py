"""Pasting low-resolution instance masks into a full-size image (docs/method.md "Student network", inference),
touching only the pixels of each box.

Coordinate convention (the same as the model's, and the image <-> graph contract's numpy paste in
`boxseg.contract`, which the runtime's C++ core implements): mask pixel i of a stride-s grid is centred at image
coordinate s*i + s/2, and an output pixel x is centred at x + 0.5. Pixels outside a detection's box are False; a
box of zero width or height has no pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from boxseg.contract import MASK_STRIDE, MASK_THRESHOLD


def paste_masks(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    out_size: tuple[int, int],
    input_size: tuple[int, int] | None = None,
    mask_stride: int = MASK_STRIDE,
    threshold: float = MASK_THRESHOLD,
) -> torch.Tensor:
    """Upsample (D, h, w) mask probabilities inside their boxes and threshold -> (D, out_h, out_w) bool.

    boxes (D, 4) xyxy are in the model-input frame. `input_size` is the (h, w) the original image was resized to
    before padding; when given, the output is the original image of `out_size` and boxes and masks are scaled by
    out_size / input_size. Without it, the output frame is the input frame (cropped or extended to out_size).
    Bilinear sampling is done only on each box's pixel range, so the cost is the box areas, not D * H * W.
    """
    if masks.dim() != 3 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(f"paste_masks: expected masks (D,h,w) and boxes (D,4), got {tuple(masks.shape)} and "
                         f"{tuple(boxes.shape)}")
    out_h, out_w = int(out_size[0]), int(out_size[1])
    sy, sx = (1.0, 1.0) if input_size is None else (input_size[0] / out_h, input_size[1] / out_w)
    result = torch.zeros(masks.shape[0], out_h, out_w, dtype=torch.bool, device=masks.device)
    if masks.shape[0] == 0:
        return result
    m = masks.float()[:, None]  # (D, 1, h, w)
    mh, mw = masks.shape[-2:]
    boxes_out = boxes.float().cpu() / torch.tensor([sx, sy, sx, sy])
    for i, (x1, y1, x2, y2) in enumerate(boxes_out.tolist()):
        if not (x2 > x1 and y2 > y1):  # zero width or height: no pixels (floor/ceil would still give one)
            continue
        c0, c1 = max(0, math.floor(x1)), min(out_w, math.ceil(x2))
        r0, r1 = max(0, math.floor(y1)), min(out_h, math.ceil(y2))
        if c1 <= c0 or r1 <= r0:
            continue
        # Output pixel centre -> input coordinate -> fractional mask index; grid_sample wants [-1, 1] over the
        # mask's pixel centres (align_corners=True), with the border value repeated outside.
        xs = ((torch.arange(c0, c1, device=masks.device) + 0.5) * sx / mask_stride - 0.5) / max(mw - 1, 1) * 2 - 1
        ys = ((torch.arange(r0, r1, device=masks.device) + 0.5) * sy / mask_stride - 0.5) / max(mh - 1, 1) * 2 - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx, gy], dim=-1)[None].float()
        crop = F.grid_sample(m[i : i + 1], grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
        result[i, r0:r1, c0:c1] = crop > threshold
    return result
