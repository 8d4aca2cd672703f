"""Dynamic mask head (params, batched bmm vs a per-instance conv reference), aligned upsampling, config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from boxseg.config import ConfigError, config_to_dict, from_dict
from boxseg.model.config import ModelConfig
from boxseg.model.dynamic_head import dynamic_mask_head, num_params, relative_coords, split_params
from boxseg.model.layers import aligned_upsample, locations_for


@pytest.mark.parametrize("c_mask,expected", [(8, 169), (16, 233)])
def test_dynamic_parameter_counts(c_mask: int, expected: int) -> None:
    cfg = ModelConfig.tiny(mask_branch_channels=c_mask)
    assert cfg.num_dynamic_params == expected
    assert num_params(c_mask + 2, 8, 3) == expected
    w, b = split_params(torch.zeros(5, expected), c_mask + 2, 8, 3)
    assert [tuple(t.shape) for t in w] == [(5, 8, c_mask + 2), (5, 8, 8), (5, 1, 8)]
    assert [tuple(t.shape) for t in b] == [(5, 8), (5, 8), (5, 1)]


def test_default_config_is_the_issue_default_169() -> None:
    assert ModelConfig().num_dynamic_params == 169


def test_split_params_rejects_a_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"expected \(N, 169\)"):
        split_params(torch.zeros(2, 170), 10, 8, 3)


def reference_mask_head(mask_feats: torch.Tensor, params: torch.Tensor, locations: torch.Tensor,
                        soi: torch.Tensor, img_idx: torch.Tensor) -> torch.Tensor:
    """One instance at a time with F.conv2d: the plain formulation the bmm path must reproduce."""
    _, c, h, w = mask_feats.shape
    ys = torch.arange(h, dtype=mask_feats.dtype) * 8 + 4
    xs = torch.arange(w, dtype=mask_feats.dtype) * 8 + 4
    outs = []
    for i in range(params.shape[0]):
        rx = (locations[i, 0] - xs)[None, :].expand(h, w) / soi[i]
        ry = (locations[i, 1] - ys)[:, None].expand(h, w) / soi[i]
        x = torch.cat([torch.stack([rx, ry])[None], mask_feats[img_idx[i]][None]], dim=1)
        ws, bs = split_params(params[i : i + 1], c + 2, 8, 3)
        for k, (wt, b) in enumerate(zip(ws, bs)):
            x = F.conv2d(x, wt[0][:, :, None, None], b[0])
            if k < 2:
                x = F.relu(x)
        outs.append(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(outs)


def test_batched_dynamic_head_matches_per_instance_convolutions() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 6, 7, generator=gen, dtype=torch.float64)
    params = torch.randn(5, 169, generator=gen, dtype=torch.float64) * 0.5
    locs = torch.rand(5, 2, generator=gen, dtype=torch.float64) * 50
    soi = torch.tensor([64.0, 128.0, 64.0, 256.0, 1024.0], dtype=torch.float64)
    img = torch.tensor([0, 1, 1, 0, 1])
    out = dynamic_mask_head(feats, params, locs, soi, img)
    assert out.shape == (5, 12, 14)
    torch.testing.assert_close(out, reference_mask_head(feats, params, locs, soi, img))


def test_dynamic_head_with_no_instances() -> None:
    out = dynamic_mask_head(torch.randn(1, 8, 4, 4), torch.zeros(0, 169), torch.zeros(0, 2), torch.zeros(0),
                            torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 8, 8)


def test_relative_coordinates_point_from_pixels_to_the_instance() -> None:
    rel = relative_coords(torch.tensor([[12.0, 20.0]]), torch.tensor([64.0]), h=3, w=2, stride=8)
    # grid pixel (y=1, x=0) is centred at (4, 12): rel = ((12-4)/64, (20-12)/64)
    torch.testing.assert_close(rel[0, :, 1 * 2 + 0], torch.tensor([8 / 64, 8 / 64]))


def test_aligned_upsample_keeps_pixel_centres_aligned() -> None:
    """A map whose value is the image x-coordinate of each stride-8 pixel centre, upsampled x2, must give the
    x-coordinate of each stride-4 pixel centre (away from the border, where bilinear clamps)."""
    locs8 = locations_for(4, 6, 8, torch.device("cpu"))
    xmap = locs8[:, 0].reshape(1, 1, 4, 6)
    up = aligned_upsample(xmap, 2)[0, 0]
    locs4 = locations_for(8, 12, 4, torch.device("cpu"))[:, 0].reshape(8, 12)
    torch.testing.assert_close(up[:, 1:-1], locs4[:, 1:-1])


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="ModelConfig.backbone"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="ModelConfig.box_score"):
        ModelConfig(box_score="iou")
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        from_dict(ModelConfig, {"backbone": "resnet18", "nope": 1}, source="test")


def test_config_round_trips_through_a_dict() -> None:
    cfg = ModelConfig.tiny(num_classes=5)
    again = from_dict(ModelConfig, config_to_dict(cfg), source="test")
    assert again == cfg and again.resnet_width == 16
    assert ModelConfig().mean == (127.0, 127.0, 127.0)  # EfficientNet-Lite's own convention
    assert ModelConfig(backbone="resnet50", pretrained=False).mean == (123.675, 116.28, 103.53)
