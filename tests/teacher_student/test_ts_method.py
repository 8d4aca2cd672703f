"""The teacher-student Method on the real model, data pipeline and loop (tiny model, 64x64 synthetic images)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from boxseg.train.checkpoint import load_checkpoint
from boxseg.train.config import InputConfig, load_config
from boxseg.train.data import TrainDataset, collate
from boxseg.train.loop import Trainer
from boxseg.train.losses.criterion import Criterion
from boxseg.train.losses.sim import SIMMaskLoss, ignore_band, ignore_bce_dice
from boxseg.train.pseudo.common import box_masks
from boxseg.train.pseudo.config import (
    ColorJitterConfig,
    GaussianBlurConfig,
    GrayscaleConfig,
    PCConfig,
    QAMConfig,
    SIMConfig,
    StudentAugConfig,
    TeacherConfig,
    TeacherInputConfig,
)
from boxseg.train.teacher_student import TeacherStudentMethod

from boxseg.data.coco import CocoDataset
from boxseg.data.synth import generate_dataset
from boxseg.model.condinst import CondInst
from boxseg.model.config import ModelConfig

NO_PHOTO = StudentAugConfig(color_jitter=ColorJitterConfig(p=0.0), grayscale=GrayscaleConfig(p=0.0),
                            gaussian_blur=GaussianBlurConfig(p=0.0))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ts_data")
    generate_dataset(out, num_images=4, size=(64, 64), progress=False)
    return out


def _cfg(data_dir: Path, out_dir: Path, **sections):
    cfg = load_config("boxinst", overrides=[
        "solver.max_iter=3", "solver.ims_per_batch=2", "solver.warmup_iters=0", "solver.lr=0.05",
        "runtime.progress=false", "runtime.checkpoint_every=0", "input.train_scales=[48, 64]",
        "input.train_max_size=96", "input.test_size=64", f"data.train_dir={data_dir}", f"runtime.out_dir={out_dir}"])
    # score_thresh 0: an untrained model's scores are ~0.01, and QAM's pool must not be empty in a 3-step run.
    cfg = dataclasses.replace(cfg, model=ModelConfig.tiny(num_classes=4, score_thresh=0.0))
    cfg.teacher = TeacherConfig(input=TeacherInputConfig(short=64, max=96), ema_momentum=0.99)
    cfg.qam = QAMConfig(tau_score=0.0, tau_pixel=0.0)  # gates open: an untrained teacher still yields labels
    cfg.pc = PCConfig(tau=0.0)
    cfg.pseudo_labeler = "qam"
    cfg.method = "teacher_student"
    for k, v in sections.items():
        setattr(cfg, k, v)
    return cfg


def _snapshot(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_short_run_teacher_changes_only_through_ema(data_dir: Path, tmp_path: Path):
    cfg = _cfg(data_dir, tmp_path / "run")
    seen: dict[str, list] = {"stats": [], "ema_checked": []}

    class Spy(TeacherStudentMethod):
        def prepare_batch(self, batch, it):
            before = _snapshot(self.teacher)
            out = super().prepare_batch(batch, it)
            after = _snapshot(self.teacher)
            assert all(torch.equal(before[k], after[k]) for k in before)  # labelling never changes the teacher
            self._before_step = after
            seen["stats"].append(dict(self.last_stats))
            for t in out["targets"]:
                n = t["boxes"].shape[0]
                assert t["pseudo_masks"].shape == (n, *[s // 4 for s in out["images"].shape[-2:]])
                assert t["pseudo_weights"].shape == (n,) and t["pseudo_valid"].dtype == torch.bool
            assert out["color_images"].shape == out["images"].shape
            return out

        def after_step(self, it):
            now = _snapshot(self.teacher)
            # The optimizer step moved the student but not the teacher.
            assert all(torch.equal(self._before_step[k], now[k]) for k in now)
            assert all(p.grad is None for p in self.teacher.parameters())
            student = dict(self.student.named_parameters())
            m = self.ema.current_momentum()  # the EMA warm-up: 0, 1/2, 2/3 in the first three steps
            super().after_step(it)
            for k, p in self.teacher.named_parameters():
                torch.testing.assert_close(p, m * self._before_step[k] + (1 - m) * student[k].detach(),
                                           atol=1e-6, rtol=0)
            seen["ema_checked"].append(it)

    trainer = Trainer(cfg, method_factory=Spy)
    summary = trainer.train()
    assert seen["ema_checked"] == [0, 1, 2]
    assert any(s["pseudo_valid_frac"] > 0 for s in seen["stats"])
    assert seen["stats"][-1]["bank_size"] > 0 and sum(s["pastes_per_image"] for s in seen["stats"]) > 0
    # Telemetry reaches metrics.jsonl; the synthetic data has GT masks, so the pseudo-mask IoU is measured.
    records = [json.loads(line) for line in (Path(summary["out_dir"]) / "metrics.jsonl").read_text().splitlines()]
    tele = [r["telemetry"] for r in records if "telemetry" in r]
    assert tele and set(tele[-1]) >= {"pseudo_valid_frac", "w_mean", "w_p10", "w_p50", "w_p90",
                                      "teacher_score_p50", "bank_size", "pastes_per_image", "pseudo_iou"}
    assert tele[-1]["pseudo_iou"] is not None and 0.0 <= tele[-1]["pseudo_iou"] <= 1.0
    assert summary["telemetry"] == tele[-1]
    assert "loss_mask_sup" in summary["final_losses"]
    ckpt = load_checkpoint(Path(summary["checkpoint"]))
    method = trainer.method
    assert ckpt["teacher"] is not None
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(ckpt["teacher"][k], v)
    assert len(ckpt["method"]["bank"]["entries"]) == len(method.bank) > 0
    assert ckpt["method"]["ema_updates"] == 3
    # The student is what gets evaluated (and exported).
    assert method.model_for_eval is method.student


def _batch(data_dir: Path, flip: float, scale: int = 64) -> dict:
    ds = TrainDataset(CocoDataset(data_dir), InputConfig(train_scales=(scale,), train_max_size=96, hflip_prob=flip),
                      keep_original=True)
    return collate([ds[(0, 1)], ds[(1, 2)]])


def _method(cfg) -> TeacherStudentMethod:
    torch.manual_seed(0)
    model = CondInst(cfg.model)
    return TeacherStudentMethod(cfg, model, Criterion(cfg.loss, cfg.model))


@pytest.mark.parametrize("labeller", ["qam", "bpma"])
def test_labels_do_not_depend_on_the_student_flip(data_dir: Path, tmp_path: Path, labeller: str):
    cfg = _cfg(data_dir, tmp_path, student=NO_PHOTO, pc=PCConfig(enabled=False), pseudo_labeler=labeller)
    if labeller == "bpma":
        cfg.bpma = dataclasses.replace(cfg.bpma, tau_iou=0.0, tau_c=0.0, score="cls")
    method = _method(cfg)
    plain = method.prepare_batch(_batch(data_dir, 0.0), 0)
    flipped = method.prepare_batch(_batch(data_dir, 1.0), 0)
    for a, b in zip(plain["targets"], flipped["targets"]):
        assert torch.equal(a["pseudo_valid"], b["pseudo_valid"])
        torch.testing.assert_close(a["pseudo_weights"], b["pseudo_weights"])
        # Same teacher view, so the student-frame masks are mirror images (the padded width is 64 here).
        torch.testing.assert_close(a["pseudo_masks"].flip(-1), b["pseudo_masks"], atol=1e-5, rtol=0)
    assert any(bool(t["pseudo_valid"].any()) for t in plain["targets"])
    assert torch.equal(plain["images"], plain["color_images"])  # photometric off: nothing changed


def test_boxinst_plus_pc_only_tutors_get_pseudo_loss(data_dir: Path, tmp_path: Path):
    cfg = _cfg(data_dir, tmp_path, teacher=TeacherConfig(source="student", input=TeacherInputConfig(64, 96)))
    method = _method(cfg)
    assert method.teacher is None and method.ema is None
    out = method.prepare_batch(_batch(data_dir, 0.5), 0)
    assert len(method.bank) > 0 and method.last_stats["pastes_per_image"] > 0
    for t in out["targets"]:
        assert torch.equal(t["pseudo_valid"], t["is_tutor"])
    # The photometric augmentation changed the student input but not the colour-affinity image.
    assert not torch.equal(out["images"], out["color_images"])
    state = method.state_dict()
    other = _method(cfg)
    other.load_state_dict(state)
    assert len(other.bank) == len(method.bank)


def test_pc_is_deterministic_per_iteration(data_dir: Path, tmp_path: Path):
    cfg = _cfg(data_dir, tmp_path)
    a, b = _method(cfg), _method(cfg)
    for m in (a, b):
        m.prepare_batch(_batch(data_dir, 0.5), 0)  # fill the banks identically
    out_a = a.prepare_batch(_batch(data_dir, 0.5), 7)
    out_b = b.prepare_batch(_batch(data_dir, 0.5), 7)
    assert torch.equal(out_a["images"], out_b["images"])
    for ta, tb in zip(out_a["targets"], out_b["targets"]):
        assert all(torch.equal(ta[k], tb[k]) for k in ("boxes", "classes", "pseudo_masks", "pseudo_valid"))


def test_rejects_labellers_it_cannot_run(data_dir: Path, tmp_path: Path):
    for labeller in ("none", "magic"):  # "none" is for the supervised presets
        with pytest.raises(ValueError, match=f"pseudo_labeler: got '{labeller}', expected 'qam', 'bpma' or 'sim'"):
            _method(_cfg(data_dir, tmp_path, pseudo_labeler=labeller))


@pytest.mark.parametrize("instance_map", ["iou_weighted", "qam"])
def test_sim_labels_learn_prototypes_and_round_trip(data_dir: Path, tmp_path: Path, instance_map: str):
    """SIM on the real model: labels in [0, 1] zero outside their boxes, weights = Eq. 11's importance (<= 1), the
    prototypes of the labelled classes start, and they travel with the method's state."""
    sim = SIMConfig(instance_map=instance_map, tau_low=0.05, tau_high=0.1)  # an untrained teacher is unsure
    cfg = _cfg(data_dir, tmp_path, pseudo_labeler="sim", sim=sim, student=NO_PHOTO,
               pc=PCConfig(tau=0.0, selection="importance", placement="random"))
    method = _method(cfg)
    assert isinstance(method.criterion.pseudo_loss_fn, SIMMaskLoss)
    out = method.prepare_batch(_batch(data_dir, 0.5), 0)
    for t in out["targets"]:
        m = t["pseudo_masks"]
        assert bool(((m >= 0) & (m <= 1)).all()) and bool(((t["pseudo_weights"] >= 0) & (t["pseudo_weights"] <= 1)).all())
    seen = torch.unique(torch.cat([t["classes"] for t in _batch(data_dir, 0.5)["targets"]]))
    assert bool(method.sim.protos.ready[seen].any())
    state = method.state_dict()
    other = _method(cfg)
    other.load_state_dict(state)
    assert torch.equal(other.sim.protos.protos, method.sim.protos.protos)
    assert torch.equal(other.sim.protos.ready, method.sim.protos.ready)


def test_sim_loss_waits_for_the_warm_up_then_counts_pasted_objects_with_lambda_paste() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 6)
    pseudo = torch.rand(2, 6, 6)
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [1.0, 1.0, 5.0, 5.0]])
    gt_idx = torch.tensor([0, 0, 1, 1])
    valid = torch.tensor([True, True])
    loss = SIMMaskLoss(SIMConfig(lambda_pseudo=0.5, lambda_paste=1.0), warmup_iters=10)
    args = (logits, gt_idx, pseudo, torch.ones(2), valid, boxes)
    assert float(loss(*args, iteration=9)["loss_mask_sup"]) == 0.0
    plain = float(loss(*args, iteration=10)["loss_mask_sup"])
    pasted = float(loss(*args, iteration=10, tutor=torch.tensor([False, True]))["loss_mask_sup"])
    inside = box_masks(boxes, 6, 6)
    per = [float(ignore_bce_dice(logits[i:i + 1], *ignore_band(pseudo[g:g + 1], inside[g:g + 1], 0.3, 0.7)))
           for i, g in enumerate(gt_idx.tolist())]
    assert plain == pytest.approx(0.5 * sum(per) / 4, rel=1e-5)
    assert pasted == pytest.approx((0.5 * (per[0] + per[1]) + 1.0 * (per[2] + per[3])) / 4, rel=1e-5)


def test_boxinst_plus_pc_labels_in_eval_mode(data_dir: Path, tmp_path: Path):
    """With no teacher the student labels its own teacher view: in eval mode (no second update of normalisation
    statistics, no batch statistics on the teacher view), and it is back in train mode afterwards."""
    cfg = _cfg(data_dir, tmp_path, teacher=TeacherConfig(source="student", input=TeacherInputConfig(64, 96)))
    method = _method(cfg)
    method.student.train()
    modes: list[bool] = []
    hook = method.student.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
    before = {k: v.clone() for k, v in method.student.named_buffers()}
    method.prepare_batch(_batch(data_dir, 0.5), 0)
    hook.remove()
    assert modes == [False]
    assert method.student.training
    assert all(torch.equal(before[k], v) for k, v in method.student.named_buffers())


def test_telemetry_measures_pseudo_masks_against_gt_masks_and_drops_them(data_dir: Path, tmp_path: Path):
    cfg = _cfg(data_dir, tmp_path)
    method = _method(cfg)
    ds = TrainDataset(CocoDataset(data_dir, with_masks=True), InputConfig(train_scales=(64,), train_max_size=96),
                      with_masks=True, keep_original=True)
    out = method.prepare_batch(collate([ds[(0, 1)], ds[(1, 2)]]), 0)
    stats = method.telemetry()
    assert all("masks" not in t for t in out["targets"])  # GT masks never reach the losses
    assert 0.0 <= stats["pseudo_iou"] <= 1.0 and 0.0 < stats["pseudo_valid_frac"] <= 1.0
    assert 0.0 <= stats["w_p10"] <= stats["w_p50"] <= stats["w_p90"] <= 1.0
    method.prepare_batch(_batch(data_dir, 0.5), 1)  # no GT masks in the batch: no IoU
    assert math.isnan(method.telemetry()["pseudo_iou"])
