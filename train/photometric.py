"""Student photometric augmentation on tensors (docs/method.md "Views"): colour jitter, grayscale, Gaussian blur.

Images are float (3, H, W) RGB in [0, 255]. No torchvision (it does not load here); the operations follow the
usual definitions: brightness scales, contrast blends with the mean gray level, saturation blends with the gray
image, hue rotates H in HSV; the four jitter operations run in a random order. Every random draw comes from the
`torch.Generator` passed in, so a seeded generator reproduces the output exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .pseudo.config import StudentAugConfig

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's "L" conversion


def _rand(gen: torch.Generator | None) -> float:
    return float(torch.rand((), generator=gen))


def _uniform(lo: float, hi: float, gen: torch.Generator | None) -> float:
    return lo + (hi - lo) * _rand(gen)


def to_gray(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) luma."""
    w = img.new_tensor(_GRAY).view(3, 1, 1)
    return (img * w).sum(0, keepdim=True)


def adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return (img * factor).clamp(0, 255)


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    mean = to_gray(img).mean()
    return (mean + factor * (img - mean)).clamp(0, 255)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    gray = to_gray(img)
    return (gray + factor * (img - gray)).clamp(0, 255)


def rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> HSV with all channels in [0, 1]."""
    r, g, b = img.unbind(0)
    maxc, _ = img.max(0)
    minc, _ = img.min(0)
    delta = maxc - minc
    v = maxc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`."""
    h, s, v = hsv.unbind(0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [torch.stack(c) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = torch.zeros_like(hsv)
    for k, c in enumerate(choices):
        out = torch.where((i == k).unsqueeze(0), c, out)
    return out


def adjust_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate hue by `shift` turns (in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(img / 255.0)
    hsv = torch.stack([(hsv[0] + shift) % 1.0, hsv[1], hsv[2]])
    return (hsv_to_rgb(hsv) * 255.0).clamp(0, 255)


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, radius ceil(3 sigma), reflect padding (falls back to replicate for tiny images)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    h, w = img.shape[-2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    out = F.pad(img.unsqueeze(0), (radius, radius, radius, radius), mode=mode)
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return out.squeeze(0)


class StudentPhotometric:
    """Random colour jitter (p 0.8), grayscale (p 0.2) and Gaussian blur (p 0.5, sigma in [0.1, 2]) by default."""

    def __init__(self, cfg: StudentAugConfig | None = None) -> None:
        self.cfg = cfg or StudentAugConfig()

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"StudentPhotometric: expected a (3, H, W) image, got shape {tuple(img.shape)}")
        out = img.float()
        cj, gen = self.cfg.color_jitter, generator
        if _rand(gen) < cj.p:
            order = torch.randperm(4, generator=gen).tolist()
            # Draw every factor up front so the number of draws does not depend on the order.
            b = _uniform(max(0.0, 1 - cj.brightness), 1 + cj.brightness, gen)
            c = _uniform(max(0.0, 1 - cj.contrast), 1 + cj.contrast, gen)
            s = _uniform(max(0.0, 1 - cj.saturation), 1 + cj.saturation, gen)
            hue = _uniform(-cj.hue, cj.hue, gen)
            for op in order:
                if op == 0 and cj.brightness > 0:
                    out = adjust_brightness(out, b)
                elif op == 1 and cj.contrast > 0:
                    out = adjust_contrast(out, c)
                elif op == 2 and cj.saturation > 0:
                    out = adjust_saturation(out, s)
                elif op == 3 and cj.hue > 0:
                    out = adjust_hue(out, hue)
        if _rand(gen) < self.cfg.grayscale.p:
            out = to_gray(out).expand(3, -1, -1).clone()
        if _rand(gen) < self.cfg.gaussian_blur.p:
            lo, hi = self.cfg.gaussian_blur.sigma
            out = gaussian_blur(out, _uniform(lo, hi, gen))
        return out.to(img.dtype) if img.dtype.is_floating_point else out.round().clamp(0, 255).to(img.dtype)

    def apply_batch(self, images: torch.Tensor, image_sizes: list[tuple[int, int]],
                    generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Augment each padded batch image inside its valid (h, w) region; padding stays as it was. `generator`:
        one for the whole batch, or one per image."""
        out = images.clone()
        for i, (h, w) in enumerate(image_sizes):
            gen = generator[i] if isinstance(generator, list) else generator
            out[i, :, :h, :w] = self(images[i, :, :h, :w], gen)
        return out
