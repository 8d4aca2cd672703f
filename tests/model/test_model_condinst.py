"""CondInst: dense output shapes, the fixed-size inference path, NMS keep mask, input checks."""

from __future__ import annotations

import pytest
import torch

from boxseg import ops
from boxseg.model import CondInst, ModelConfig


@pytest.fixture(scope="module")
def model() -> CondInst:
    torch.manual_seed(0)
    return CondInst(ModelConfig.tiny(num_classes=3)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 255


def test_dense_output_shapes(model: CondInst, images: torch.Tensor) -> None:
    with torch.no_grad():
        d = model(images)
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert [tuple(t.shape) for t in d.cls_logits] == [(2, 3, *s) for s in sizes]
    assert [tuple(t.shape) for t in d.box_reg] == [(2, 4, *s) for s in sizes]
    assert [tuple(t.shape) for t in d.ctrness] == [(2, 1, *s) for s in sizes]
    assert [tuple(t.shape) for t in d.params] == [(2, 169, *s) for s in sizes]
    assert [tuple(t.shape) for t in d.locations] == [(h * w, 2) for h, w in sizes]
    assert d.strides == (8, 16, 32, 64, 128) and d.soi == (64.0, 128.0, 256.0, 512.0, 1024.0)
    assert tuple(d.mask_feats.shape) == (2, 8, 16, 16) and d.image_size == (128, 128)
    assert all(bool((t > 0).all()) for t in d.box_reg)  # distances are positive by construction
    flat = d.flat()
    n = sum(h * w for h, w in sizes)
    assert flat.cls_logits.shape == (2, n, 3) and flat.box_reg.shape == (2, n, 4) and flat.ctrness.shape == (2, n)
    assert flat.params.shape == (2, n, 169) and flat.boxes.shape == (2, n, 4)
    assert flat.levels.tolist() == [lvl for lvl, (h, w) in enumerate(sizes) for _ in range(h * w)]
    # the first P4 location: stride 16, centre (8, 8); flattening keeps level-major, row-major order
    torch.testing.assert_close(flat.locations[256], torch.tensor([8.0, 8.0]))
    torch.testing.assert_close(flat.cls_logits[1, 256 + 9], d.cls_logits[1][1][:, 1, 1])
    mask = model.mask_head(d.mask_feats, flat.params[0, :3], flat.locations[:3], flat.soi[:3],
                           torch.zeros(3, dtype=torch.long))
    assert mask.shape == (3, 32, 32)


def test_inference_is_fixed_size_padded_and_respects_max_dets(model: CondInst, images: torch.Tensor) -> None:
    det = model.inference(images, score_thr=0.0, max_dets=7)
    assert det.boxes.shape == (2, 7, 4) and det.scores.shape == (2, 7) and det.masks.shape == (2, 7, 32, 32)
    assert det.classes.dtype == torch.int64 and det.num_dets.dtype == torch.int64
    assert det.num_dets.tolist() == [7, 7]  # hundreds of candidates survive at threshold 0
    assert bool((det.scores[:, :-1] >= det.scores[:, 1:]).all())
    assert bool(((det.masks >= 0) & (det.masks <= 1)).all())
    assert bool((det.boxes[..., 0::2] <= 128).all() and (det.boxes >= 0).all())

    none = model.inference(images, score_thr=0.999)
    d = model.cfg.max_dets
    assert none.boxes.shape == (2, d, 4) and none.num_dets.tolist() == [0, 0]
    assert bool((none.classes == -1).all()) and float(none.scores.abs().sum()) == 0.0
    assert float(none.masks.abs().sum()) == 0.0 and float(none.boxes.abs().sum()) == 0.0


def test_inference_pads_when_there_are_fewer_candidates_than_slots(model: CondInst, images: torch.Tensor) -> None:
    det = model.inference(images, score_thr=0.0, pre_nms_topk=4, max_dets=10)
    assert det.boxes.shape == (2, 10, 4) and det.masks.shape == (2, 10, 32, 32)
    assert bool((det.num_dets <= 4).all())
    for b in range(2):
        n = int(det.num_dets[b])
        assert bool((det.classes[b, n:] == -1).all()) and bool((det.scores[b, n:] == 0).all())
        assert bool((det.classes[b, :n] >= 0).all())


def test_inference_masks_come_from_the_dynamic_head_of_the_kept_candidates(model: CondInst,
                                                                          images: torch.Tensor) -> None:
    with torch.no_grad():
        dense = model(images)
        cand = model.decode(dense, score_thr=0.0, pre_nms_topk=50)
        keep = model.nms_keep(cand.boxes, cand.scores, cand.classes)
        det = model.select_and_segment(dense, cand, keep, max_dets=5)
        for b in range(2):
            order = torch.argsort(torch.where(keep[b], cand.scores[b], -1.0), descending=True)[:5]
            torch.testing.assert_close(det.scores[b], cand.scores[b, order])
            logits = model.mask_head(dense.mask_feats, cand.params[b, order], cand.locations[b, order],
                                     cand.soi[b, order], torch.full((5,), b))
            torch.testing.assert_close(det.masks[b], logits.sigmoid())


def test_decode_takes_the_top_scores_of_the_flattened_levels(model: CondInst, images: torch.Tensor) -> None:
    with torch.no_grad():
        dense = model(images)
        cand = model.decode(dense, score_thr=0.0, pre_nms_topk=30)
        scores = dense.flat().cls_logits.sigmoid()
    for b in range(2):
        torch.testing.assert_close(cand.scores[b], scores[b].flatten().topk(30).values)
        torch.testing.assert_close(scores[b, cand.loc_idx[b], cand.classes[b]], cand.scores[b])


def test_nms_keep_matches_per_image_class_aware_nms(model: CondInst) -> None:
    gen = torch.Generator().manual_seed(3)
    xy = torch.rand(2, 40, 2, generator=gen) * 60
    boxes = torch.cat([xy, xy + 10 + torch.rand(2, 40, 2, generator=gen) * 30], dim=-1)
    scores = torch.rand(2, 40, generator=gen)
    scores[:, -5:] = 0.0  # below-threshold padding is never kept
    classes = torch.randint(0, 3, (2, 40), generator=gen)
    keep = model.nms_keep(boxes, scores, classes, 0.5)
    for b in range(2):
        valid = torch.nonzero(scores[b] > 0).squeeze(1)
        ref = valid[ops.batched_nms(boxes[b, valid], scores[b, valid], classes[b, valid], 0.5)]
        assert sorted(torch.nonzero(keep[b]).squeeze(1).tolist()) == sorted(ref.tolist())
    assert not bool(keep[:, -5:].any())


def test_box_score_fallback_uses_centerness() -> None:
    m = CondInst(ModelConfig.tiny(box_score="fcos_cls_ctr")).eval()
    with torch.no_grad():
        flat = m(torch.zeros(1, 3, 64, 64)).flat()
    expected = (flat.cls_logits.sigmoid() * flat.ctrness.sigmoid()[..., None]).sqrt()
    torch.testing.assert_close(m.class_scores(flat), expected)


def test_input_checks(model: CondInst) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        model(torch.zeros(3, 128, 128))


def test_normalisation_lives_in_the_model(model: CondInst) -> None:
    assert model.pixel_mean.shape == (1, 3, 1, 1)
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(model.cfg.mean))
    assert "pixel_mean" not in model.state_dict()  # derived from the config, not a checkpoint entry
