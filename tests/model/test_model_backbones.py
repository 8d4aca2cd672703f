"""Backbones: torchvision key compatibility, EfficientNet-Lite0 real weights, frozen BN, output strides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from boxseg.model.backbone import build_backbone
from boxseg.model.backbone.efficientnet import EfficientNetLite0, builtin_weights_path
from boxseg.model.backbone.efficientnet import load_pretrained as load_effnet
from boxseg.model.backbone.frozen_bn import FrozenBatchNorm2d
from boxseg.model.backbone.resnet import ResNet, load_pretrained
from boxseg.model.config import ModelConfig


def torchvision_resnet18_keys() -> dict[str, tuple[int, ...]]:
    """torchvision's resnet18 state-dict keys and shapes, written out from its naming convention."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (c,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    keys["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    cin = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys[f"{p}.conv1.weight"] = (width, cin, 3, 3)
            bn(f"{p}.bn1", width)
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            if block == 0 and stage > 1:
                keys[f"{p}.downsample.0.weight"] = (width, cin, 1, 1)
                bn(f"{p}.downsample.1", width)
            cin = width
    keys["fc.weight"] = (1000, 512)
    keys["fc.bias"] = (1000,)
    return keys


def test_resnet18_loads_a_torchvision_style_checkpoint_strictly(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) if s else torch.tensor(7) for k, s in torchvision_resnet18_keys().items()}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = ResNet(18, norm="frozen_bn")
    report = load_pretrained(model, path, strict=True)
    assert report.ok and not report.missing and not report.unexpected
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    sd = model.state_dict()
    assert set(sd) == {k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    for k in sd:
        torch.testing.assert_close(sd[k], state[k])


def test_key_mismatches_are_reported_and_strict_raises(tmp_path: Path) -> None:
    state = {k: torch.zeros(s) for k, s in torchvision_resnet18_keys().items() if s}
    del state["layer1.0.conv1.weight"]
    state["layer9.extra.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # DDP-style wrapping
    with pytest.warns(UserWarning, match="MISSING"):
        report = load_pretrained(ResNet(18), path)
    assert report.missing == ["layer1.0.conv1.weight"]
    assert report.unexpected == ["layer9.extra.weight"]
    assert report.shape_mismatch and report.shape_mismatch[0].startswith("conv1.weight")
    assert "conv1.weight" not in report.missing
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        load_pretrained(ResNet(18), path, strict=True)
    cfg = ModelConfig.tiny(resnet_width=64, pretrained=str(path))
    with pytest.raises(ValueError, match="does not fit resnet18"), pytest.warns(UserWarning):
        build_backbone(cfg)


def test_resnet_true_pretrained_without_a_file_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="local torchvision checkpoint"):
        build_backbone(ModelConfig(backbone="resnet18", pretrained=True))


@pytest.mark.parametrize("depth,channels", [(18, [128, 256, 512]), (50, [512, 1024, 2048])])
def test_resnet_outputs_c3_c5_at_strides_8_16_32(depth: int, channels: list[int]) -> None:
    model = ResNet(depth, norm="frozen_bn").eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32))]
    assert model.out_channels == channels


def test_resnet34_and_101_stage_layout() -> None:
    r34, r101 = ResNet(34), ResNet(101)
    assert [len(getattr(r34, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert [len(getattr(r101, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert r101.out_channels == [512, 1024, 2048]


def test_frozen_bn_matches_batchnorm_in_eval_and_has_no_parameters() -> None:
    gen = torch.Generator().manual_seed(1)
    bn = nn.BatchNorm2d(6, eps=1e-3).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(6, generator=gen))
        bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)
    frozen = FrozenBatchNorm2d(6, eps=1e-3)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is accepted
    x = torch.randn(2, 6, 5, 5, generator=gen)
    torch.testing.assert_close(frozen(x), bn(x))
    assert list(frozen.parameters()) == []


def test_freeze_stem_stops_gradients_of_the_stem_only() -> None:
    model = ResNet(18, norm="gn", width=8, freeze_stem=True)
    assert not model.conv1.weight.requires_grad
    assert model.layer1[0].conv1.weight.requires_grad
    eff = EfficientNetLite0(norm="gn", freeze_stem=True)
    assert not eff._conv_stem.weight.requires_grad and eff._blocks[0]._depthwise_conv.weight.requires_grad


@pytest.fixture(scope="module")
def lite0() -> tuple[EfficientNetLite0, object]:
    model = EfficientNetLite0(norm="frozen_bn").eval()
    return model, load_effnet(model)


def test_efficientnet_lite0_loads_the_shipped_imagenet_weights_exactly(lite0: tuple) -> None:
    model, report = lite0
    assert report.ok and report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert {k.split(".")[0] for k in report.ignored} == {"_conv_head", "_bn1", "_fc"}
    file_sd = torch.load(builtin_weights_path(), map_location="cpu")
    own = model.state_dict()
    assert len(own) == len(report.loaded) == 240
    for k in own:
        torch.testing.assert_close(own[k], file_sd[k])


def test_efficientnet_lite0_strides_and_channels(lite0: tuple) -> None:
    model, _ = lite0
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, 64, 128))
    assert [tuple(o.shape) for o in outs] == [(1, 40, 8, 16), (1, 112, 4, 8), (1, 320, 2, 4)]


def test_efficientnet_lite0_classifies_a_real_photo(lite0: tuple) -> None:
    """End-to-end check of layout, TF 'SAME' padding, eps and the (x-127)/128 input convention: the shipped
    classifier on top of our feature extractor calls matplotlib's Grace Hopper portrait 'military uniform'."""
    import matplotlib
    from PIL import Image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is not shipped with this matplotlib")
    img = Image.open(photo).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float()
    model, _ = lite0
    sd = torch.load(builtin_weights_path(), map_location="cpu")
    cfg = ModelConfig()  # efficientnet_lite0 defaults
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        c5 = model((x - mean) / std)[-1]
        y = torch.nn.functional.conv2d(c5, sd["_conv_head.weight"])
        y = torch.nn.functional.batch_norm(y, sd["_bn1.running_mean"], sd["_bn1.running_var"], sd["_bn1.weight"],
                                           sd["_bn1.bias"], eps=1e-3)
        logits = torch.nn.functional.linear(torch.nn.functional.relu6(y).mean((2, 3)), sd["_fc.weight"],
                                            sd["_fc.bias"])
    assert int(logits.argmax()) == 652  # ImageNet class 652: military uniform
