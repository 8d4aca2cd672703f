"""Teacher-student training (docs/method.md "One teacher-student iteration"): the `Method` behind the `boxteacher`,
`boxseg` and BoxInst + PC presets.

One iteration, per batch (`prepare_batch`):
  1. the teacher view of every image: the original image resized to teacher.input (short 800, max 1333), never
     flipped or colour-changed (docs/method.md "Views"); the student view is the batch the engine made
     (multi-scale + flip);
  2. no-grad teacher forward; pseudo labels in the teacher frame from QAM (BoxSeg Sec. 3.2) or BPMA (BT Alg. 1) for
     every GT box;
  3. the memory bank takes this batch's eligible peer tutors (before any paste);
  4. pseudo masks go to the student frame (docs/method.md "Views"), copy-paste teaches learners;
  5. `color_images` keeps the composite before the photometric augmentation (the pairwise colour term reads it),
     then colour jitter / grayscale / blur make the student input.
After each optimizer step the EMA teacher follows the student (`after_step`). The student is what is evaluated
and shipped. Checkpoints hold the teacher (as the engine's `teacher` entry) and the memory bank.

`teacher.source=student` is BoxInst + PC (BoxSeg Table 6): no teacher; the student labels its own teacher view with
QAM only to fill the bank and place tutors, and only pasted tutors get the pseudo-mask loss.

Config: the sections `teacher`, `student`, `pseudo_labeler`, `qam`, `bpma`, `pc` (see `train/pseudo/config.py`) and
`loss.mask_sup` (`boxseg.train.losses.config.MaskSupConfig`) of the `TrainConfig`; a missing section means its
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from boxseg.contract import MASK_STRIDE

from . import distributed as D
from .copy_paste import MemoryBank, PeerCopyPaste, collect_tutors
from .data import pad_to, resize_image
from .ema import ModelEMA
from .geometry import ViewGeometry, map_boxes, map_masks, teacher_geometry
from .loop import METHODS, Method, mix_seed
from .losses.mask_sup import QualityMaskLoss
from .losses.sim import SIMMaskLoss
from .profile import stage, stage_begin, stage_end
from .pseudo.bpma import bpma_label
from .pseudo.config import (
    BPMAConfig,
    MaskSupConfig,
    PCConfig,
    QAMConfig,
    SIMConfig,
    StudentAugConfig,
    TeacherConfig,
)
from .pseudo.qam import qam_label
from .pseudo.sim import SIMLabeller, instance_map, positives, sim_label
from .telemetry import best_gt_scores, downsample_gt, mask_iou, summarize


@dataclass
class TSSections:
    teacher: TeacherConfig
    student: StudentAugConfig
    pseudo_labeler: str
    qam: QAMConfig
    bpma: BPMAConfig
    sim: SIMConfig
    pc: PCConfig
    mask_sup: MaskSupConfig


def ts_sections(cfg: Any) -> TSSections:
    """The teacher-student sections of a TrainConfig, defaults where a section is absent.

    `mask_sup` is `cfg.loss.mask_sup` (its one home).
    """
    mask_sup = getattr(getattr(cfg, "loss", None), "mask_sup", None) or MaskSupConfig()
    sec = TSSections(
        teacher=getattr(cfg, "teacher", None) or TeacherConfig(),
        student=getattr(cfg, "student", None) or StudentAugConfig(),
        pseudo_labeler=getattr(cfg, "pseudo_labeler", "qam"),
        qam=getattr(cfg, "qam", None) or QAMConfig(),
        bpma=getattr(cfg, "bpma", None) or BPMAConfig(),
        sim=getattr(cfg, "sim", None) or SIMConfig(),
        pc=getattr(cfg, "pc", None) or PCConfig(),
        mask_sup=mask_sup,
    )
    if sec.pseudo_labeler not in ("qam", "bpma", "sim"):
        raise ValueError(f"config key pseudo_labeler: got {sec.pseudo_labeler!r}, expected 'qam', 'bpma' or 'sim' (the "
                         "teacher-student method needs a labeller; 'none' is for the supervised presets)")
    if sec.teacher.source == "student" and sec.pseudo_labeler != "qam":
        raise ValueError("config keys teacher.source='student' (BoxInst + PC) needs pseudo_labeler='qam'")
    return sec


class TeacherStudentMethod(Method):
    """EMA teacher + pseudo labels (QAM or BPMA) + Peer-assisted Copy-paste + student photometric augmentation."""

    needs_original_images = True
    uses_gt_mask_telemetry = True

    def __init__(self, cfg: Any, student: nn.Module, criterion: Any) -> None:
        super().__init__(cfg, student, criterion)
        self.sec = ts_sections(cfg)
        if getattr(cfg.loss, "mask_loss", "boxinst") != "boxinst":
            raise ValueError("teacher-student training is box-supervised: loss.mask_loss must be 'boxinst', got "
                             f"{cfg.loss.mask_loss!r}")
        if not hasattr(criterion, "pseudo_loss_fn"):
            raise TypeError("TeacherStudentMethod: the criterion has no `pseudo_loss_fn` seam "
                            "(boxseg.train.losses.criterion.Criterion has one)")
        criterion.pseudo_loss_fn = QualityMaskLoss(self.sec.mask_sup)
        self.sim: SIMLabeller | None = None
        # Where a soft pseudo mask becomes foreground, for the telemetry's IoU with GT masks: the others' Dice
        # target is binarised at 0.5, SIM's hard label is its blend >= tau_high.
        self.label_thresh = 0.5
        if self.sec.pseudo_labeler == "sim":
            self.label_thresh = self.sec.sim.tau_high
            mcfg = student.cfg
            self.sim = SIMLabeller.create(self.sec.sim, mcfg.num_classes, mcfg.mask_branch_channels,
                                          int(getattr(getattr(cfg, "runtime", None), "seed", 0)))
            # SIM Eq. 8-10: BCE + Dice with the ignore band; the low-level losses alone until the warm-up ends.
            criterion.pseudo_loss_fn = SIMMaskLoss(self.sec.sim, self.sec.mask_sup.warmup_iters)
        self.ema: ModelEMA | None = None
        if self.sec.teacher.source == "ema":
            self.ema = ModelEMA(student, self.sec.teacher.ema_momentum, self.sec.teacher.ema_warmup)
            self.teacher = self.ema.teacher
        self.bank = MemoryBank(self.sec.pc.bank_size)
        self.paster = PeerCopyPaste(self.sec.pc)
        self.size_divisor = int(getattr(getattr(cfg, "input", None), "size_divisor", 32))
        self.seed = int(getattr(getattr(cfg, "runtime", None), "seed", 0))
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ the hooks
    @property
    def labeller(self) -> nn.Module:
        return self.teacher if self.teacher is not None else self.student

    def prepare_batch(self, batch: dict[str, Any], iteration: int) -> dict[str, Any]:
        if "orig_images" not in batch:
            raise ValueError("TeacherStudentMethod: the batch has no 'orig_images' (the data pipeline keeps them "
                             "when the method sets needs_original_images)")
        sec = self.sec
        images = batch["images"]
        n_img, _, hp, wp = images.shape
        s_geoms = [ViewGeometry(tuple(o), tuple(s), bool(f))
                   for o, s, f in zip(batch["orig_sizes"], batch["image_sizes"], batch["flipped"])]
        t_geoms = [teacher_geometry(tuple(o), sec.teacher.input.short, sec.teacher.input.max)
                   for o in batch["orig_sizes"]]
        with stage("augment"):
            t_images = self._teacher_images(batch["orig_images"], t_geoms)
        targets = [dict(t) for t in batch["targets"]]
        t_boxes = [map_boxes(t["boxes"].float().reshape(-1, 4), sg, tg)
                   for t, sg, tg in zip(targets, s_geoms, t_geoms)]
        with stage("pseudo_label"):
            labels = self._pseudo_labels(t_images, t_boxes, targets, t_geoms)
        stage_begin("copy_paste")  # the bank, the student-frame pseudo masks and the pastes
        gen = torch.Generator().manual_seed(mix_seed(self.seed, iteration, D.rank(), 0x7EAC))
        if sec.pc.enabled:
            for i in range(n_img):  # the bank is updated from the whole batch before any paste (BoxSeg Alg. 1)
                th, tw = t_geoms[i].size
                collect_tutors(self.bank, t_images[i, :, :th, :tw], t_boxes[i], targets[i]["classes"],
                               labels[i]["masks"], labels[i]["weights"], labels[i]["valid"], sec.pc,
                               mask_stride=MASK_STRIDE, scale=t_geoms[i].scale)
        color_images = images.clone()
        pasted = 0
        grid = (hp // MASK_STRIDE, wp // MASK_STRIDE)
        ious = []
        for i in range(n_img):
            hs, ws = s_geoms[i].size
            lab = labels[i]
            t = targets[i]
            # GT masks are a telemetry-only input (runtime.telemetry_gt_masks): measured here, then dropped, so
            # nothing downstream can train on them.
            gt_masks = t.pop("masks", None)
            t["pseudo_weights"] = lab["weights"]
            t["pseudo_valid"] = lab["valid"]
            # The loss-grid masks: the targets without copy-paste, and the telemetry's IoU (copy-paste makes its
            # targets from the full-resolution masks below, so with it and no GT masks this is not computed).
            on_grid = None
            if gt_masks is not None or not sec.pc.enabled:
                on_grid = map_masks(lab["masks"], t_geoms[i], s_geoms[i], src_stride=MASK_STRIDE,
                                    dst_stride=MASK_STRIDE, out_shape=grid)
            if gt_masks is not None:
                v = lab["valid"]
                ious.append(mask_iou(on_grid[v], downsample_gt(gt_masks[v], MASK_STRIDE, grid), self.label_thresh))
            if sec.pc.enabled:
                t["pseudo_masks"] = map_masks(lab["masks"], t_geoms[i], s_geoms[i], src_stride=MASK_STRIDE)
                composite, t, info = self.paster(images[i, :, :hs, :ws], t, self.bank, s_geoms[i].scale, gen)
                color_images[i, :, :hs, :ws] = composite
                pasted += info.pasted
                # Full-resolution student-frame masks -> the loss grid (stride 4 of the padded batch).
                full = F.pad(t["pseudo_masks"].float(), (0, wp - ws, 0, hp - hs))
                t["pseudo_masks"] = F.avg_pool2d(full[:, None], MASK_STRIDE, MASK_STRIDE)[:, 0]
            else:
                t["pseudo_masks"] = on_grid
                t["is_tutor"] = torch.zeros_like(t["pseudo_valid"])
            if sec.teacher.source == "student":
                t["pseudo_valid"] = t["pseudo_valid"] & t["is_tutor"]  # BoxInst + PC: learners stay box-only
            targets[i] = t
        stage_end("copy_paste")
        out = dict(batch)
        out["targets"] = targets
        out["color_images"] = color_images
        with stage("augment"):
            out["images"] = self.photometric.apply_batch(color_images, [g.size for g in s_geoms],
                                                         self.photometric_generators(batch, iteration))
        self.last_stats = summarize(
            num_gt=sum(int(lab["valid"].numel()) for lab in labels),
            valid=torch.cat([lab["valid"].bool().reshape(-1) for lab in labels]),
            weights=torch.cat([lab["weights"].reshape(-1) for lab in labels]),
            teacher_scores=torch.cat([lab["teacher_scores"].reshape(-1) for lab in labels]),
            bank_size=len(self.bank), pastes=pasted, num_images=n_img,
            ious=torch.cat(ious) if ious else None)
        return out

    def telemetry(self) -> dict[str, float]:
        return self.last_stats

    def after_step(self, iteration: int) -> None:
        if self.ema is not None:
            with stage("ema"):
                self.ema.update(self.student)

    @property
    def model_for_eval(self) -> nn.Module:
        return self.student  # BoxSeg ships the student (docs/method.md "Student network")

    def state_dict(self) -> dict[str, Any]:
        state = {"bank": self.bank.state_dict(), "ema_updates": self.ema.updates if self.ema else 0}
        if self.sim is not None:
            state["sim_prototypes"] = {k: v.cpu() for k, v in self.sim.protos.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "bank" in state:
            self.bank.load_state_dict(state["bank"])
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
        if self.sim is not None and "sim_prototypes" in state:
            self.sim.protos.load_state_dict(state["sim_prototypes"])

    # ------------------------------------------------------------------ pieces
    def _teacher_images(self, orig_images: list[torch.Tensor], geoms: list[ViewGeometry]) -> torch.Tensor:
        """The teacher views, padded into one batch (values 0..255)."""
        hp = pad_to(max(g.size[0] for g in geoms), self.size_divisor)
        wp = pad_to(max(g.size[1] for g in geoms), self.size_divisor)
        out = torch.zeros(len(geoms), 3, hp, wp, device=orig_images[0].device)
        for i, (im, g) in enumerate(zip(orig_images, geoms)):
            out[i, :, :g.size[0], :g.size[1]] = resize_image(im.float(), g.size)
        return out

    @torch.no_grad()
    def _pseudo_labels(self, t_images: torch.Tensor, t_boxes: list[torch.Tensor], targets: list[dict],
                       t_geoms: list[ViewGeometry]) -> list[dict[str, torch.Tensor]]:
        model = self.labeller
        # Label in eval mode: with teacher.source=student (BoxInst + PC) the labeller is the training student, and
        # a train-mode forward would update its normalisation statistics a second time per step and label the
        # teacher views with batch statistics. The EMA teacher is always in eval mode already (and switching its
        # ~360 modules twice per step for nothing showed in `bench train --profile`).
        was_training = model.training
        if not was_training:
            return self._label(model, t_images, t_boxes, targets, t_geoms)
        model.eval()
        try:
            return self._label(model, t_images, t_boxes, targets, t_geoms)
        finally:
            model.train(was_training)

    def _label(self, model: nn.Module, t_images: torch.Tensor, t_boxes: list[torch.Tensor], targets: list[dict],
               t_geoms: list[ViewGeometry]) -> list[dict[str, torch.Tensor]]:
        return label_teacher_views(model, t_images, t_boxes, [t["classes"] for t in targets], t_geoms,
                                   self.sec.pseudo_labeler, self.sec.qam, self.sec.bpma, self.sim)


def label_teacher_views(model: nn.Module, t_images: torch.Tensor, t_boxes: list[torch.Tensor],
                        gt_classes: list[torch.Tensor], t_geoms: list[ViewGeometry], labeller: str,
                        qam_cfg: QAMConfig, bpma_cfg: BPMAConfig, sim: SIMLabeller | None = None
                        ) -> list[dict[str, torch.Tensor]]:
    """Pseudo labels for the GT boxes of a batch of teacher views (docs/method.md "Quality-Aware Module",
    "BoxTeacher's labeller", "SIM"): one forward of `model` (the caller sets eval mode and no_grad), then
    QAM (`labeller='qam'`), BPMA (`'bpma'`) or SIM (`'sim'`, with `sim` holding its prototypes) per image, in
    each view's frame at mask stride 4.

    t_images (B,3,H,W) padded views; t_boxes[i] (G_i,4) and gt_classes[i] (G_i,) the GT boxes in view i's pixels
    and their class indices; t_geoms[i] how view i was made from its original image (QAM's adaptive K reads the
    box areas in original pixels through it). Per image: masks (G,H/4,W/4) soft, weights (G,), valid (G,),
    teacher_scores (G,) (telemetry), plus QAM's k and num_candidates. Shared by teacher-student training and
    `boxseg label`, so both label alike.
    """
    with stage("teacher_forward"):
        dense = model(t_images)
    hp, wp = t_images.shape[-2:]
    grid = (hp // MASK_STRIDE, wp // MASK_STRIDE)
    flat = dense.flat()
    scores = model.class_scores(flat)  # (B, L, C) IoU-aware box-scores
    all_boxes = flat.boxes
    # Telemetry: how close the labeller is to QAM's score gate on each GT object.
    best = [best_gt_scores(all_boxes[i], scores[i], boxes, gt_classes[i]) for i, boxes in enumerate(t_boxes)]
    out = []
    if labeller == "bpma":
        cand = model.decode(dense)
        keep = model.nms_keep(cand.boxes, cand.scores, cand.classes)
        det = model.select_and_segment(dense, cand, keep)
        for i, boxes in enumerate(t_boxes):
            n = int(det.num_dets[i])
            out.append({**bpma_label(det.boxes[i, :n], det.scores[i, :n], det.masks[i, :n], boxes,
                                     bpma_cfg, MASK_STRIDE), "teacher_scores": best[i]})
        return out
    if labeller == "sim":
        return _sim_labels(model, dense, flat, scores, all_boxes, t_boxes, gt_classes, t_geoms, grid, best, qam_cfg,
                           sim)
    return [{**_qam_image(model, dense, flat, scores, all_boxes, i, boxes, gt_classes[i], t_geoms[i], qam_cfg,
                          grid), "teacher_scores": best[i]} for i, boxes in enumerate(t_boxes)]


def _qam_image(model: nn.Module, dense: Any, flat: Any, scores: torch.Tensor, all_boxes: torch.Tensor, i: int,
               boxes: torch.Tensor, classes: torch.Tensor, geom: ViewGeometry, qam_cfg: QAMConfig,
               grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """QAM on image i of a labelled batch (BoxSeg Sec. 3.2)."""
    th, tw = geom.size
    pool = candidate_pool(scores[i], flat.levels, model)
    cand_boxes = all_boxes[i, pool].clone()
    cand_boxes[:, 0::2] = cand_boxes[:, 0::2].clamp(0, tw)
    cand_boxes[:, 1::2] = cand_boxes[:, 1::2].clamp(0, th)
    areas = geom.boxes_to_original(boxes)
    areas = (areas[:, 2] - areas[:, 0]).clamp_min(0) * (areas[:, 3] - areas[:, 1]).clamp_min(0)

    def mask_fn(idx: torch.Tensor) -> torch.Tensor:
        return _mask_probs(model, dense, flat, i, pool[idx])

    return qam_label(cand_boxes, scores[i, pool], mask_fn, boxes, classes, areas, qam_cfg, MASK_STRIDE, grid)


def _mask_probs(model: nn.Module, dense: Any, flat: Any, i: int, loc: torch.Tensor) -> torch.Tensor:
    """The dynamic mask head's probabilities at locations `loc` of image i (mask stride 4)."""
    img = torch.full_like(loc, i)
    return model.mask_head(dense.mask_feats, flat.params[i, loc], flat.locations[loc], flat.soi[loc], img).sigmoid()


def _sim_labels(model: nn.Module, dense: Any, flat: Any, scores: torch.Tensor, all_boxes: torch.Tensor,
                t_boxes: list[torch.Tensor], gt_classes: list[torch.Tensor], t_geoms: list[ViewGeometry],
                grid: tuple[int, int], best: list[torch.Tensor], qam_cfg: QAMConfig, sim: SIMLabeller | None
                ) -> list[dict[str, torch.Tensor]]:
    """SIM per image (docs/method.md "SIM"): positives by the FCOS rule, the IoU-weighted instance map (or QAM's
    fused mask), the prototypes' semantic map on the normalised mask features, their blend; then, when learning,
    the prototypes follow the new foreground."""
    if sim is None:
        raise ValueError("label_teacher_views: labeller 'sim' needs its SIMLabeller (prototypes)")
    mcfg = model.cfg
    feats = F.interpolate(dense.mask_feats, size=grid, mode="bilinear", align_corners=False)
    z_all = F.normalize(feats, dim=1, eps=1e-12)
    sim.protos.to(z_all.device)
    out = []
    for i, boxes in enumerate(t_boxes):
        if sim.cfg.instance_map == "qam":
            q = _qam_image(model, dense, flat, scores, all_boxes, i, boxes, gt_classes[i], t_geoms[i], qam_cfg, grid)
            m_i, has = q["masks"], q["valid"]
        else:
            loc, gi, iou = positives(flat.locations, flat.strides, flat.levels, all_boxes[i], boxes,
                                     tuple(mcfg.sizes_of_interest), mcfg.center_sampling_radius,
                                     sim.cfg.max_positives)
            m_i, has = instance_map(_mask_probs(model, dense, flat, i, loc), iou, gi, boxes.shape[0], sim.cfg.mu)
        lab = sim_label(z_all[i], sim.protos, m_i, has, boxes, gt_classes[i], sim.cfg, MASK_STRIDE)
        fg = lab.pop("foreground")
        if sim.learn:
            sim.protos.update(z_all[i], fg, gt_classes[i], sim.generator)
        out.append({**lab, "teacher_scores": best[i]})
    if sim.learn:
        sim.protos.sync()  # every rank labels every iteration, so the collective is called in step
    return out


def candidate_pool(scores: torch.Tensor, levels: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """QAM's pre-NMS pool (docs/method.md "Quality-Aware Module"): locations whose best class score > score_thresh,
    the top pre_nms_topk of them per FPN level. -> location indices."""
    mcfg = model.cfg
    best = scores.max(1).values
    keep = []
    for lvl in torch.unique(levels).tolist():
        idx = torch.nonzero((levels == lvl) & (best > mcfg.score_thresh)).flatten()
        if idx.numel() > mcfg.pre_nms_topk:
            idx = idx[best[idx].topk(mcfg.pre_nms_topk).indices]
        keep.append(idx)
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long, device=scores.device)


METHODS.setdefault("teacher_student", TeacherStudentMethod)
