"""Input generators shared by the ops tests (imported as a plain module: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch


def random_boxes(n: int, h: int, w: int, gen: torch.Generator, spill: float = 0.3) -> torch.Tensor:
    """(n,4) xyxy boxes in grid coordinates; some reach past the grid edges."""
    cx = torch.rand(n, generator=gen) * w * (1 + 2 * spill) - spill * w
    cy = torch.rand(n, generator=gen) * h * (1 + 2 * spill) - spill * h
    bw = torch.rand(n, generator=gen) * w * 0.8 + 0.3
    bh = torch.rand(n, generator=gen) * h * 0.8 + 0.3
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)


def smooth_images(b: int, h: int, w: int, gen: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Piecewise-constant colour regions plus mild noise: many neighbour similarities above 0.3, many below."""
    img = torch.empty(b, 3, h, w, dtype=dtype)
    for i in range(b):
        img[i] = torch.rand(3, 1, 1, generator=gen, dtype=dtype) * 255
        for _ in range(4):
            y0, x0 = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
            img[i, :, y0 : y0 + max(1, h // 2), x0 : x0 + max(1, w // 2)] = (
                torch.rand(3, 1, 1, generator=gen, dtype=dtype) * 255
            )
    noise = torch.rand(b, 3, h, w, generator=gen, dtype=dtype) * 0.6
    return (img + noise).clamp(0, 255)
