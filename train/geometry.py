"""Teacher -> student frame mapping (docs/method.md "Views").

A view of an image is the original image resized to `size` = (h, w) (anisotropic rounding allowed) and optionally
flipped horizontally; padding is added at the bottom/right and does not move pixels. Coordinates are continuous
with pixel i covering [i, i+1) (the `F.interpolate(align_corners=False)` convention), so a map at stride s has its
cell j covering view pixels [s*j, s*(j+1)).

Masks are mapped in one bilinear resampling directly from the source grid to the destination grid (mathematically
the same chain as "upsample to the teacher input, back to the original image, then the student's resize and flip",
without materialising the full-resolution original).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewGeometry:
    """How a view was made from the original image: resize to `size` (h, w), then an optional h-flip."""

    orig_size: tuple[int, int]
    size: tuple[int, int]
    flip: bool = False

    @property
    def scale_x(self) -> float:
        return self.size[1] / self.orig_size[1]

    @property
    def scale_y(self) -> float:
        return self.size[0] / self.orig_size[0]

    @property
    def scale(self) -> float:
        """Isotropic resize factor (geometric mean of the two axes' factors)."""
        return (self.scale_x * self.scale_y) ** 0.5

    def boxes_from_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """(n, 4) xyxy boxes in original pixels -> this view."""
        out = boxes.clone().float()
        out[:, 0::2] *= self.scale_x
        out[:, 1::2] *= self.scale_y
        if self.flip:
            x1 = self.size[1] - out[:, 2]
            x2 = self.size[1] - out[:, 0]
            out[:, 0], out[:, 2] = x1, x2
        return out

    def boxes_to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """(n, 4) xyxy boxes in this view -> original pixels."""
        out = boxes.clone().float()
        if self.flip:
            x1 = self.size[1] - out[:, 2]
            x2 = self.size[1] - out[:, 0]
            out[:, 0], out[:, 2] = x1, x2
        out[:, 0::2] /= self.scale_x
        out[:, 1::2] /= self.scale_y
        return out


def resize_shortest_edge(orig_size: tuple[int, int], short: int, max_size: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to `short` with the longer side capped at `max_size` (the training
    pipeline's own rule, `boxseg.train.data.scaled_size`, so teacher and student views are made alike)."""
    from boxseg.train.data import scaled_size

    return scaled_size(int(orig_size[0]), int(orig_size[1]), short, max_size)


def teacher_geometry(orig_size: tuple[int, int], short: int = 800, max_size: int = 1333) -> ViewGeometry:
    """The teacher view (docs/method.md "Views"): fixed shortest-edge resize, never flipped."""
    return ViewGeometry(orig_size=tuple(orig_size), size=resize_shortest_edge(orig_size, short, max_size))


def map_boxes(boxes: torch.Tensor, src: ViewGeometry, dst: ViewGeometry) -> torch.Tensor:
    """Boxes from view `src` to view `dst` of the same original image."""
    _check_same_image(src, dst)
    return dst.boxes_from_original(src.boxes_to_original(boxes))


def map_masks(
    masks: torch.Tensor,
    src: ViewGeometry,
    dst: ViewGeometry,
    src_stride: int = 1,
    dst_stride: int = 1,
    out_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resample soft maps (n, Hs, Ws) on `src`'s grid at `src_stride` onto `dst`'s grid at `dst_stride`.

    Bilinear; destination cells that fall outside the source view (or onto its padding) read 0. `out_shape`
    defaults to the destination view's size divided by `dst_stride` (rounded up); pass the padded size to get
    a map of the padded batch shape (padding cells are 0).
    """
    _check_same_image(src, dst)
    if masks.dim() != 3:
        raise ValueError(f"map_masks: masks must be (n, H, W), got shape {tuple(masks.shape)}")
    if out_shape is None:
        out_shape = (-(-dst.size[0] // dst_stride), -(-dst.size[1] // dst_stride))
    n = masks.shape[0]
    ho, wo = out_shape
    if n == 0:
        return masks.new_zeros((0, ho, wo))
    device = masks.device
    # Destination cell centres in destination-view pixels.
    yd = (torch.arange(ho, device=device, dtype=torch.float32) + 0.5) * dst_stride
    xd = (torch.arange(wo, device=device, dtype=torch.float32) + 0.5) * dst_stride
    # -> original pixels (undo flip, then resize).
    if dst.flip:
        xd = dst.size[1] - xd
    xo, yo = xd / dst.scale_x, yd / dst.scale_y
    # -> source view pixels (resize, then flip).
    xs, ys = xo * src.scale_x, yo * src.scale_y
    if src.flip:
        xs = src.size[1] - xs
    # Outside the source view's valid area (its padding, or off-image) reads 0.
    inside_x = (xs >= 0) & (xs <= src.size[1])
    inside_y = (ys >= 0) & (ys <= src.size[0])
    hs, ws = masks.shape[-2:]
    # -> normalised grid coordinates of the source map (align_corners=False: -1 is the left edge of cell 0).
    gx = 2.0 * (xs / src_stride) / ws - 1.0
    gy = 2.0 * (ys / src_stride) / hs - 1.0
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # (ho, wo, 2) as (x, y)
    src_f = masks.unsqueeze(1).float()
    # Border padding inside the valid view so edge pixels keep their value, zero outside it.
    out = F.grid_sample(src_f, grid.unsqueeze(0).expand(n, -1, -1, -1), mode="bilinear",
                        padding_mode="border", align_corners=False).squeeze(1)
    valid = inside_y[:, None] & inside_x[None, :]
    return (out * valid).to(masks.dtype if masks.dtype.is_floating_point else torch.float32)


def _check_same_image(src: ViewGeometry, dst: ViewGeometry) -> None:
    if tuple(src.orig_size) != tuple(dst.orig_size):
        raise ValueError(f"views of different images: src.orig_size={src.orig_size}, dst.orig_size={dst.orig_size}")
