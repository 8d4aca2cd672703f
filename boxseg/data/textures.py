"""Colours and textures for the synthetic data (vectorised numpy; all randomness from the caller's Generator)."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageFilter


@functools.lru_cache(maxsize=256)
def _lerp_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells + 2) bilinear interpolation weights from a coarse grid to n pixel centres (cached, read-only)."""
    pos = (np.arange(n, dtype=np.float32) + 0.5) * (cells / n)
    i0 = pos.astype(np.int64)
    f = pos - i0
    w = np.zeros((n, cells + 2), dtype=np.float32)
    w[np.arange(n), i0] = 1 - f
    w[np.arange(n), i0 + 1] = f
    w.flags.writeable = False
    return w


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, channels: int) -> np.ndarray:
    """Value noise: a random (cells+2)^2 grid bilinearly upsampled to (channels, height, width), float32."""
    grid = rng.standard_normal((channels, cells + 2, cells + 2), dtype=np.float32)
    # Separable bilinear upsampling as two small matrix products per channel: far cheaper than gathers.
    return _lerp_matrix(height, cells) @ grid @ _lerp_matrix(width, cells).T


def object_texture(
    rng: np.random.Generator, height: int, width: int, base: np.ndarray, amplitude: float
) -> np.ndarray:
    """A (3, height, width) float32 texture around colour `base`: flat, stripes, blotches or checks."""
    kind = int(rng.integers(4))
    delta = rng.standard_normal(3).astype(np.float32)
    delta *= amplitude / max(float(np.linalg.norm(delta)), 1e-6)
    base = base.astype(np.float32)[:, None, None]
    delta = delta[:, None, None]
    if kind == 0:  # flat
        return np.broadcast_to(base + rng.uniform(-0.3, 0.3) * delta, (3, height, width))
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    if kind == 1:  # stripes
        theta = rng.uniform(0.0, np.pi)
        period = rng.uniform(4.0, 14.0)
        t = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi))
        return base + t[None] * delta
    if kind == 2:  # blotches
        cells = int(rng.integers(2, 6))
        return base + smooth_noise(rng, height, width, cells, 3) * (amplitude * 0.7)
    period = int(rng.integers(3, 9))  # checks
    t = ((np.arange(height)[:, None] // period + np.arange(width)[None, :] // period) % 2) * 2 - 1
    return base + t[None].astype(np.float32) * (0.6 * delta)


def background(rng: np.random.Generator, height: int, width: int, base: np.ndarray, amplitude: float) -> np.ndarray:
    """A (3, height, width) float32 background: base colour, a gradient, large-scale colour noise, fine blotches."""
    cells = int(rng.integers(2, 5))
    grid = rng.standard_normal((3, cells + 2, cells + 2), dtype=np.float32) * amplitude
    # Bilinear interpolation reproduces constants and linear ramps exactly, so the base colour and the gradient
    # are added on the coarse grid (node k sits at k / cells of the image) instead of on every pixel.
    gy, gx = rng.uniform(-1, 1, size=2) * amplitude
    nodes = np.arange(cells + 2, dtype=np.float32) / cells - 0.5
    grid += gy * nodes[:, None] + gx * nodes[None, :]
    grid += base.astype(np.float32)[:, None, None]
    img = _lerp_matrix(height, cells) @ grid @ _lerp_matrix(width, cells).T
    img += smooth_noise(rng, height, width, int(rng.integers(10, 24)), 1) * (amplitude * 0.5)
    return img


def easy_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Background colour and n object colours far from it (and from each other where possible)."""
    bg = rng.uniform(40, 215, size=3)
    cand = rng.uniform(0, 255, size=(64 * max(n, 1), 3))
    cand = cand[np.linalg.norm(cand - bg, axis=1) >= 110]
    chosen: list[np.ndarray] = []
    for c in cand:
        if len(chosen) == n:
            break
        if all(np.linalg.norm(c - o) >= 50 for o in chosen):
            chosen.append(c)
    while len(chosen) < n:  # rare: fall back to the complement of the background
        chosen.append(np.clip(255 - bg + rng.uniform(-30, 30, size=3), 0, 255))
    return bg, np.asarray(chosen).reshape(n, 3)


def hard_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Background colour and n object colours all within a small distance of it (so of each other too)."""
    bg = rng.uniform(70, 185, size=3)
    d = rng.standard_normal((n, 3))
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return bg, bg + d * rng.uniform(18, 38, size=(n, 1))


def degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Hard-split camera artefacts on a uint8 image: blur, sensor noise, then a JPEG round trip."""
    # A box blur (one pass) costs a third of PIL's Gaussian (three passes) and looks the same at these radii.
    pil = Image.fromarray(img).filter(ImageFilter.BoxBlur(float(rng.uniform(0.5, 1.2))))
    amp = int(rng.integers(4, 11))
    noisy = np.asarray(pil).astype(np.int16) + rng.integers(-amp, amp + 1, size=img.shape, dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        buf, format="JPEG", quality=int(rng.integers(30, 61))
    )
    buf.seek(0)
    with Image.open(buf) as jpg:
        return np.asarray(jpg.convert("RGB"))
