"""Label, then train: CondInst's mask loss on `boxseg label` masks is weighted by their w and ignores invalid ones;
on plain COCO masks it is what it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from label_helpers import TINY

from boxseg.cli import main
from boxseg.model import CondInst, ModelConfig


def _scene() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Two images: objects A, B in the first, C in the second; GT masks are ellipses inside the boxes."""
    imgs = torch.full((2, 3, 128, 128), 40.0)
    boxes = [torch.tensor([[16.0, 20.0, 70.0, 90.0], [70.0, 60.0, 120.0, 120.0]]), torch.tensor([[30.0, 30.0, 100.0,
                                                                                                  80.0]])]
    targets = []
    for i, bx in enumerate(boxes):
        for k, (x0, y0, x1, y1) in enumerate(bx.tolist()):
            imgs[i, k, int(y0):int(y1), int(x0):int(x1)] = 220.0
        yy, xx = torch.meshgrid(torch.arange(128) + 0.5, torch.arange(128) + 0.5, indexing="ij")
        cx, cy = (bx[:, 0] + bx[:, 2]) / 2, (bx[:, 1] + bx[:, 3]) / 2
        rx, ry = (bx[:, 2] - bx[:, 0]) / 2, (bx[:, 3] - bx[:, 1]) / 2
        masks = ((xx[None] - cx[:, None, None]) / rx[:, None, None]) ** 2 + (
            (yy[None] - cy[:, None, None]) / ry[:, None, None]) ** 2 <= 1
        targets.append({"boxes": bx, "classes": torch.arange(len(bx)), "masks": masks})
    return imgs, targets


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    from boxseg.train.losses import Criterion, LossConfig

    torch.manual_seed(0)
    cfg = ModelConfig.tiny(num_classes=3)
    model = CondInst(cfg)
    imgs, targets = _scene()
    with torch.no_grad():
        dense = model(imgs)

    def loss(tgts, **loss_keys):  # type: ignore[no-untyped-def]
        crit = Criterion(LossConfig(mask_loss="condinst", **loss_keys), cfg)
        batch = {"images": imgs, "image_sizes": [(128, 128)] * 2, "targets": tgts}
        with torch.no_grad():
            return crit(dense, model, batch, 100)

    return loss, targets


def _with(targets, quality, valid):  # type: ignore[no-untyped-def]
    out = []
    for t, q, v in zip(targets, quality, valid):
        out.append({**t, "mask_quality": torch.tensor(q), "mask_valid": torch.tensor(v)})
    return out


def test_quality_weighted_condinst_mask_loss(setup):  # type: ignore[no-untyped-def]
    loss, targets = setup
    plain = loss(targets)
    # all valid with w = 1 is plain CondInst; the detection terms never see the label fields
    ones = loss(_with(targets, [[1.0, 1.0], [1.0]], [[True, True], [True]]))
    torch.testing.assert_close(ones["loss_mask"], plain["loss_mask"])
    assert all(torch.equal(ones[k], plain[k]) for k in ("loss_cls", "loss_box", "loss_ctr"))

    b_invalid = loss(_with(targets, [[1.0, 0.7], [1.0]], [[True, False], [True]]))
    assert not torch.allclose(b_invalid["loss_mask"], plain["loss_mask"])
    # an invalid object contributes nothing: whatever its mask, and like a valid one of weight 0
    b_mask = targets[0]["masks"].clone()
    b_mask[1] = True
    scrambled = [dict(targets[0], masks=b_mask), targets[1]]
    torch.testing.assert_close(loss(_with(scrambled, [[1.0, 0.7], [1.0]], [[True, False], [True]]))["loss_mask"],
                               b_invalid["loss_mask"])
    torch.testing.assert_close(loss(_with(scrambled, [[1.0, 0.0], [1.0]], [[True, True], [True]]))["loss_mask"],
                               b_invalid["loss_mask"])
    # w scales each object's Dice, the normaliser counts samples (BoxSeg Eq. 1): halving every w halves the loss
    half = loss(_with(targets, [[0.5, 0.9], [0.5]], [[True, False], [True]]))
    torch.testing.assert_close(half["loss_mask"], 0.5 * b_invalid["loss_mask"])
    # the config key turns the weighting off; invalid labels stay ignored
    off = loss(_with(targets, [[0.5, 0.9], [0.5]], [[True, False], [True]]), label_quality_weight=False)
    torch.testing.assert_close(off["loss_mask"], b_invalid["loss_mask"])
    nothing = loss(_with(targets, [[1.0, 1.0], [1.0]], [[False, False], [False]]))
    assert float(nothing["loss_mask"]) == 0.0


def test_labels_reach_the_training_batch(tmp_path: Path, label_data: Path, checkpoint: Path):
    from boxseg.train.config import InputConfig
    from boxseg.train.data import TrainDataset, collate

    from boxseg.data.coco import CocoDataset

    out = tmp_path / "labels"
    r = CliRunner().invoke(main, ["label", "--no-progress", "--checkpoint", str(checkpoint), "--data",
                                  str(label_data), "--out", str(out), "--min-quality", "0.072"])
    assert r.exit_code == 0, r.output
    anns = json.loads((out / "annotations.json").read_text())["annotations"]
    assert any(not a["boxseg_valid"] and "segmentation" not in a for a in anns)  # some boxes without a mask

    ds = CocoDataset(out, with_masks=True)
    by_id = {a["id"]: a for a in anns}
    train = TrainDataset(ds, InputConfig(train_scales=(64,), train_max_size=128), with_masks=True)
    samples = [train[(i, i)] for i in range(len(ds))]
    batch = collate(samples)
    for i, t in enumerate(batch["targets"]):
        ids = ds.annotation_ids(i)
        assert t["mask_valid"].tolist() == [by_id[a]["boxseg_valid"] for a in ids]
        torch.testing.assert_close(t["mask_quality"], torch.tensor([by_id[a]["boxseg_quality"] for a in ids]))
        assert not t["masks"][~t["mask_valid"]].any()  # no mask: empty, and ignored by the loss
    # plain COCO data carries no label fields, so the criterion takes its old path
    plain = collate([TrainDataset(CocoDataset(label_data, with_masks=True), InputConfig(train_scales=(64,)),
                                  with_masks=True)[(0, 0)]])
    assert "mask_valid" not in plain["targets"][0]


def test_train_condinst_on_labels(tmp_path: Path, label_data: Path, checkpoint: Path):
    out = tmp_path / "labels"
    r = CliRunner().invoke(main, ["label", "--no-progress", "--checkpoint", str(checkpoint), "--data",
                                  str(label_data), "--out", str(out), "--min-quality", "0.072"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "--preset", "condinst", "--data", str(out), "--out", str(tmp_path / "run"),
                                  "--iters", "2", "--json", *TINY, "data.workers=0", "solver.warmup_iters=1",
                                  "runtime.checkpoint_every=0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["iterations"] == 2 and 0 <= summary["final_losses"]["loss_mask"] <= 1
