"""Student photometric augmentation on tensors (docs/method.md "Views")."""

from __future__ import annotations

import torch
from boxseg.train.photometric import (
    StudentPhotometric,
    adjust_brightness,
    adjust_hue,
    gaussian_blur,
    hsv_to_rgb,
    rgb_to_hsv,
)
from boxseg.train.pseudo.config import (
    ColorJitterConfig,
    GaussianBlurConfig,
    GrayscaleConfig,
    StudentAugConfig,
)


def _img(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(seed)) * 255


def test_seeded_and_in_range():
    aug = StudentPhotometric()
    img = _img()
    outs = [aug(img, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2]) or not torch.equal(outs[0], img)
    for o in outs:
        assert o.min() >= 0 and o.max() <= 255 and o.shape == img.shape


def test_probability_zero_is_identity_and_one_applies():
    off = StudentAugConfig(color_jitter=ColorJitterConfig(p=0.0), grayscale=GrayscaleConfig(p=0.0),
                           gaussian_blur=GaussianBlurConfig(p=0.0))
    img = _img()
    assert torch.equal(StudentPhotometric(off)(img, torch.Generator().manual_seed(0)), img)
    gray = StudentAugConfig(color_jitter=ColorJitterConfig(p=0.0), grayscale=GrayscaleConfig(p=1.0),
                            gaussian_blur=GaussianBlurConfig(p=0.0))
    out = StudentPhotometric(gray)(img, torch.Generator().manual_seed(0))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    torch.testing.assert_close(out[0], 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])


def test_uint8_input_keeps_dtype():
    img = _img().round().to(torch.uint8)
    out = StudentPhotometric()(img, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == img.shape


def test_colour_operations():
    img = _img(1)
    torch.testing.assert_close(adjust_brightness(img, 0.5), img * 0.5)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(img / 255)) * 255, img, atol=1e-3, rtol=0)
    torch.testing.assert_close(adjust_hue(img, 0.0), img, atol=1e-3, rtol=0)
    red = torch.zeros(3, 2, 2)
    red[0] = 255
    green = adjust_hue(red, 1 / 3)
    torch.testing.assert_close(green, red.roll(1, 0), atol=1e-3, rtol=0)


def test_blur_keeps_constants_and_smooths():
    const = torch.full((3, 9, 9), 77.0)
    torch.testing.assert_close(gaussian_blur(const, 1.5), const)
    img = _img(2)
    out = gaussian_blur(img, 2.0)
    assert out.shape == img.shape and out.std() < 0.5 * img.std()
    tiny = gaussian_blur(torch.rand(3, 1, 2) * 255, 2.0)  # kernel larger than the image
    assert tiny.shape == (3, 1, 2) and torch.isfinite(tiny).all()


def test_batch_keeps_padding():
    images = torch.zeros(2, 3, 32, 32)
    images[0, :, :20, :24] = _img()[:, :20, :24]
    images[1, :, :32, :16] = 100.0
    out = StudentPhotometric().apply_batch(images, [(20, 24), (32, 16)], torch.Generator().manual_seed(0))
    assert out[0, :, 20:].abs().sum() == 0 and out[0, :, :, 24:].abs().sum() == 0
    assert out[1, :, :, 16:].abs().sum() == 0
