"""Procedural shapes for the synthetic data: sampling and exact rasterisation.

Every shape lives in a normalised frame (u, v) where its outer outline fits inside the unit circle; the frame is
rotated by `angle` and scaled by `radius` along u and `radius * aspect` along v. A pixel (row i, column j) belongs
to the shape when its centre (j + 0.5, i + 0.5) falls inside the outline. That rule *is* the ground truth: the
image is painted with exactly these masks, so the annotation masks are exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORY_NAMES: tuple[str, ...] = ("ellipse", "star", "blob", "ring")

_BLOB_TABLE_SIZE = 2048  # angular resolution of a blob's radius function


@dataclass(frozen=True)
class Shape:
    """One object's geometry in image pixels (centre, outer radius, aspect, rotation) plus kind parameters."""

    kind: str
    cx: float
    cy: float
    radius: float
    aspect: float
    angle: float
    # star: polygon vertices (2n, 2) in the normalised frame, counter-clockwise from angle 0.
    # blob: radius table (_BLOB_TABLE_SIZE,), max 1. ring: (hole_dx, hole_dy, hole_radius).
    params: tuple[float, ...] | np.ndarray = ()


def sample_shape(rng: np.random.Generator, kind: str, cx: float, cy: float, radius: float) -> Shape:
    """Draw the kind-specific parameters of one shape."""
    aspect = float(rng.uniform(0.55, 1.0))
    angle = float(rng.uniform(0.0, np.pi))
    params: tuple[float, ...] | np.ndarray
    if kind == "ellipse":
        params = ()
    elif kind == "star":
        aspect = float(rng.uniform(0.8, 1.0))  # very flat stars read as blobs
        n = int(rng.integers(5, 9))
        inner = float(rng.uniform(0.38, 0.6))
        step = np.pi / n
        theta = np.arange(2 * n) * step + rng.uniform(-0.15, 0.15, size=2 * n) * step
        rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        params = np.stack([rad * np.cos(theta), rad * np.sin(theta)], axis=1)
    elif kind == "blob":
        phi = np.linspace(0.0, 2 * np.pi, _BLOB_TABLE_SIZE, endpoint=False)
        # Low harmonics give the lumpy body, high harmonics with small amplitude the noisy outline.
        k = np.arange(2, 17)
        amp = rng.uniform(0.0, 1.0, size=k.size) * np.where(k <= 5, 0.22 / k**0.9, 0.035)
        phase = rng.uniform(0.0, 2 * np.pi, size=k.size)
        r = 1.0 + amp @ np.cos(k[:, None] * phi[None, :] + phase[:, None])
        params = r / r.max()
    elif kind == "ring":
        aspect = float(rng.uniform(0.7, 1.0))
        hole = float(rng.uniform(0.35, 0.62))
        off_r = float(rng.uniform(0.0, min(0.15, 0.9 - hole)))
        off_a = float(rng.uniform(0.0, 2 * np.pi))
        params = (off_r * np.cos(off_a), off_r * np.sin(off_a), hole)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {CATEGORY_NAMES}")
    return Shape(kind, float(cx), float(cy), float(radius), aspect, angle, params)


def shape_window(shape: Shape) -> tuple[int, int, int, int]:
    """Integer window (y0, x0, y1, x1), half-open, that contains the whole shape (may extend past the image)."""
    r = shape.radius
    return (
        int(np.floor(shape.cy - r)),
        int(np.floor(shape.cx - r)),
        int(np.ceil(shape.cy + r)) + 1,
        int(np.ceil(shape.cx + r)) + 1,
    )


def normalised_coords(shape: Shape, y0: int, x0: int, y1: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of the pixel centres of a window in the shape's normalised frame; float64 (h, w) each."""
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - shape.cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - shape.cx)[None, :]
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    u = (dx * c + dy * s) / shape.radius
    v = (dy * c - dx * s) / (shape.radius * shape.aspect)
    return u, v


def _inside_star(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    # The star is star-shaped about the origin, so the ray through a pixel crosses exactly one edge: the one
    # between the vertices whose angles bracket the pixel's angle. The pixel is inside when it lies on the
    # origin's side of that edge: cross(p, e) <= cross(v_k, v_{k+1}).
    vert_angle = np.arctan2(verts[:, 1], verts[:, 0]) % (2 * np.pi)
    order = np.argsort(vert_angle)
    verts, vert_angle = verts[order], vert_angle[order]
    phi = np.arctan2(v, u) % (2 * np.pi)
    k = np.searchsorted(vert_angle, phi, side="right") - 1  # -1 means "after the last vertex" (wraps)
    a = verts[k % len(verts)]
    b = verts[(k + 1) % len(verts)]
    ex, ey = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    rhs = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return u * ey - v * ex <= rhs


def rasterize(shape: Shape) -> tuple[int, int, np.ndarray]:
    """Exact mask of a shape on its window: returns (y0, x0, mask bool (h, w)); the window may leave the image."""
    y0, x0, y1, x1 = shape_window(shape)
    u, v = normalised_coords(shape, y0, x0, y1, x1)
    rr = u * u + v * v
    if shape.kind == "ellipse":
        mask = rr <= 1.0
    elif shape.kind == "ring":
        hx, hy, hr = shape.params
        mask = (rr <= 1.0) & ((u - hx) ** 2 + (v - hy) ** 2 > hr * hr)
    elif shape.kind == "star":
        mask = _inside_star(u, v, np.asarray(shape.params))
    elif shape.kind == "blob":
        table = np.asarray(shape.params)
        idx = (np.arctan2(v, u) % (2 * np.pi)) * (len(table) / (2 * np.pi))
        r = table[np.minimum(idx.astype(np.int64), len(table) - 1)]
        mask = rr <= r * r
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {CATEGORY_NAMES}")
    return y0, x0, mask


def crop_to_image(
    y0: int, x0: int, mask: np.ndarray, height: int, width: int
) -> tuple[int, int, np.ndarray]:
    """Clip a window mask to the image; returns the new (y0, x0, mask) (possibly empty)."""
    h, w = mask.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, height), min(x0 + w, width)
    if yb <= ya or xb <= xa:
        return ya, xa, np.zeros((0, 0), dtype=bool)
    return ya, xa, mask[ya - y0 : yb - y0, xa - x0 : xb - x0]
