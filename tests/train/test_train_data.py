"""Augmentation geometry, padding collate and the deterministic, resumable sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from boxseg.train.config import InputConfig
from boxseg.train.data import (
    IterationBatchSampler,
    TrainDataset,
    augment,
    build_train_loader,
    collate,
    eval_transform,
    scaled_size,
)


def _record(h: int = 60, w: int = 100) -> dict:
    """A black image with a white rectangle; the box and the mask are exactly that rectangle."""
    image = np.zeros((h, w, 3), np.uint8)
    image[10:30, 20:50] = 255
    mask = np.zeros((1, h, w), bool)
    mask[0, 10:30, 20:50] = True
    return {"image": image, "boxes": np.array([[20, 10, 50, 30]], np.float32), "classes": np.array([2]),
            "image_id": 7, "masks": mask}


def _bbox_of(binary: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(binary, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_scaled_size_respects_short_side_and_max_size():
    assert scaled_size(60, 100, 120, 1000) == (120, 200)
    assert scaled_size(60, 100, 120, 150) == (90, 150)  # capped by the longer side
    assert scaled_size(100, 60, 30, 1000) == (50, 30)


@pytest.mark.parametrize("flip", [False, True])
def test_boxes_and_masks_follow_the_pixels(flip):
    cfg = InputConfig(train_scales=(120,), train_max_size=1000, hflip_prob=1.0 if flip else 0.0)
    out = augment(_record(), cfg, np.random.default_rng(0), with_masks=True)
    assert out["image"].shape == (3, 120, 200) and out["flipped"] is flip
    expected = [40.0, 20.0, 100.0, 60.0] if not flip else [100.0, 20.0, 160.0, 60.0]
    assert out["boxes"].tolist() == [expected]
    # The bright pixels and the mask both sit exactly in the transformed box.
    assert _bbox_of(out["image"][0] > 127) == pytest.approx(expected, abs=1)
    assert _bbox_of(out["masks"][0]) == pytest.approx(expected, abs=1)
    assert out["classes"].tolist() == [2] and out["orig_size"] == (60, 100)


def test_scales_and_flips_are_drawn_from_the_config():
    cfg = InputConfig(train_scales=(30, 60, 90), train_max_size=1000, hflip_prob=0.5)
    shorts, flips = set(), set()
    for seed in range(40):
        out = augment(_record(), cfg, np.random.default_rng(seed), with_masks=False)
        shorts.add(out["image"].shape[1])
        flips.add(out["flipped"])
        assert "masks" not in out
    assert shorts == {30, 60, 90} and flips == {False, True}


def test_collate_pads_to_multiple_of_32_and_keeps_sizes():
    cfg = InputConfig(train_scales=(50,), train_max_size=1000, hflip_prob=0.0)
    a = augment(_record(60, 100), cfg, np.random.default_rng(0), with_masks=True)
    b = augment(_record(100, 60), cfg, np.random.default_rng(0), with_masks=True)
    batch = collate([a, b])
    assert batch["images"].shape == (2, 3, 96, 96)  # max(50, 83) -> 96, max(83, 50) -> 96
    assert batch["image_sizes"] == [(50, 83), (83, 50)]
    assert batch["images"][0, :, 50:].abs().sum() == 0 and batch["images"][0, :, :, 83:].abs().sum() == 0
    assert torch.equal(batch["images"][1, :, :83, :50], b["image"])
    assert batch["targets"][0]["masks"].shape == (1, 96, 96) and batch["targets"][0]["masks"].dtype == torch.bool
    assert batch["targets"][1]["boxes"].dtype == torch.float32 and batch["targets"][1]["classes"].dtype == torch.int64


def test_eval_transform_uses_test_size():
    img = eval_transform(_record(60, 100)["image"], InputConfig(test_size=30, test_max_size=1000))
    assert img.shape == (3, 30, 50) and img.dtype == torch.float32


def test_sampler_is_deterministic_resumable_and_split_over_ranks():
    full = IterationBatchSampler(10, 4, seed=5)
    seq = [full.batch_for(i) for i in range(6)]
    resumed = iter(IterationBatchSampler(10, 4, seed=5, start_iter=3))
    assert [next(resumed) for _ in range(3)] == seq[3:]
    # Two ranks together see exactly the single-process global batch, in order.
    r0 = IterationBatchSampler(10, 4, seed=5, rank=0, world_size=2)
    r1 = IterationBatchSampler(10, 4, seed=5, rank=1, world_size=2)
    for i in range(6):
        assert r0.batch_for(i) + r1.batch_for(i) == seq[i]
    # Every epoch is a permutation of the dataset; another seed gives another order.
    flat = [idx for b in seq for idx, _ in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert [b for b in IterationBatchSampler(10, 4, seed=6).batch_for(0)] != seq[0]
    with pytest.raises(ValueError, match="divisible"):
        IterationBatchSampler(10, 3, seed=0, world_size=2)


def test_loader_resumes_with_identical_batches(tiny_data):
    from boxseg.data.coco import CocoDataset

    ds = TrainDataset(CocoDataset(tiny_data["train"]), InputConfig(train_scales=(48, 64), train_max_size=128))
    a = build_train_loader(ds, 2, seed=1)
    first = [next(a) for _ in range(4)]
    b = build_train_loader(ds, 2, seed=1, start_iter=2)
    for expected in first[2:]:
        got = next(b)
        assert torch.equal(got["images"], expected["images"]) and got["image_ids"] == expected["image_ids"]
        for t, e in zip(got["targets"], expected["targets"]):
            assert torch.equal(t["boxes"], e["boxes"])


def test_worker_processes_give_the_same_batches(tiny_data):
    from boxseg.data.coco import CocoDataset

    ds = TrainDataset(CocoDataset(tiny_data["train"]), InputConfig(train_scales=(48, 64), train_max_size=128))
    a, b = build_train_loader(ds, 2, seed=4, workers=0), build_train_loader(ds, 2, seed=4, workers=2)
    for _ in range(3):
        x, y = next(a), next(b)
        assert torch.equal(x["images"], y["images"]) and x["flipped"] == y["flipped"]
