"""Peer-assisted Copy-paste (BoxSeg Alg. 1; docs/method.md "Peer-assisted Copy-paste"): a FIFO memory bank of peer
tutors and the paste onto student images.

Pipeline position (docs/method.md "One teacher-student iteration"): the bank is filled from the teacher view and the
teacher's pseudo labels; pastes happen in the student frame after the geometric augmentation and the mapping of
pseudo labels, before the photometric augmentation. The teacher never sees the composite.

Targets of one student image (all in the student frame, full resolution):
    boxes (n,4) xyxy, classes (n,), pseudo_masks (n,H,W) float in [0,1], pseudo_weights (n,), pseudo_valid (n,)
    bool, and optionally is_tutor (n,) bool (added when missing). Other keys are passed through unchanged.
All randomness comes from the `torch.Generator` passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .pseudo.common import box_masks, tight_boxes
from .pseudo.config import PCConfig

_PER_OBJECT = ("boxes", "classes", "pseudo_masks", "pseudo_weights", "pseudo_valid", "is_tutor")


@dataclass
class Tutor:
    """One memory-bank entry: RGB patch (uint8 (3,h,w)) cropped to the GT box, its binary mask (h,w), class,
    quality w, and `scale` = view pixels per original-image pixel of the view it was cut from."""

    patch: torch.Tensor
    mask: torch.Tensor
    cls: int
    w: float
    scale: float = 1.0

    def to_dict(self) -> dict:
        return {"patch": self.patch, "mask": self.mask, "cls": self.cls, "w": self.w, "scale": self.scale}


class MemoryBank:
    """FIFO bank of at most `capacity` tutors (docs/method.md "Peer-assisted Copy-paste"): push appends, and the
    oldest entry leaves when full."""

    def __init__(self, capacity: int = 80) -> None:
        if capacity < 1:
            raise ValueError(f"config key pc.bank_size: got {capacity}, expected >= 1")
        self.capacity = capacity
        self.entries: deque[Tutor] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, tutor: Tutor) -> None:
        self.entries.append(tutor)  # deque(maxlen) drops the oldest

    def sample(self, generator: torch.Generator | None = None, weighted: bool = False) -> Tutor:
        """A uniform draw, or (`weighted`) one in proportion to the tutors' w (SIM Eq. 11's importance)."""
        if not self.entries:
            raise IndexError("MemoryBank.sample: the bank is empty")
        if weighted:
            w = torch.tensor([max(float(t.w), 0.0) for t in self.entries], dtype=torch.float64)
            if float(w.sum()) > 0:
                return self.entries[int(torch.multinomial(w, 1, generator=generator))]
        return self.entries[int(torch.randint(len(self.entries), (), generator=generator))]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "entries": [t.to_dict() for t in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        self.entries = deque((Tutor(**e) for e in state["entries"]), maxlen=self.capacity)


def _box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def tutor_eligible(boxes: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor, cfg: PCConfig,
                   masks: torch.Tensor | None = None, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Which objects may become peer tutors (docs/method.md "Peer-assisted Copy-paste"). -> (n,) bool.

    selection=quality: valid, w > tau, and non-overlapping (box_disjoint | box_coverage | mask_disjoint); optionally
    not touching the image border. selection=random (Table 5 ablation arm) or importance (SIM, drawn in proportion
    to w at paste time): any object with a valid pseudo mask.
    `masks` (n,h,w) soft pseudo masks (any grid) are needed for mask_disjoint; `image_size` (h,w) in the boxes'
    units for reject_border_tutors.
    """
    n = boxes.shape[0]
    ok = valid.bool().clone()
    if cfg.selection != "quality" or n == 0:
        return ok
    ok &= weights > cfg.tau
    boxes = boxes.float()
    others = ~torch.eye(n, dtype=torch.bool, device=boxes.device)
    if cfg.nonoverlap == "box_disjoint":
        lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
        rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        inter = (rb - lt).clamp_min(0).prod(-1)
        ok &= ~((inter > 0) & others).any(1)
    elif cfg.nonoverlap == "box_coverage":
        # Fraction of b_i covered by the union of the other boxes, rasterised on a 1-px grid around b_i.
        for i in torch.nonzero(ok).flatten().tolist():
            x0, y0 = math.floor(boxes[i, 0]), math.floor(boxes[i, 1])
            x1, y1 = math.ceil(boxes[i, 2]), math.ceil(boxes[i, 3])
            if x1 <= x0 or y1 <= y0:
                ok[i] = False
                continue
            local = boxes - boxes.new_tensor([x0, y0, x0, y0])
            inside = box_masks(local, y1 - y0, x1 - x0)
            covered = (inside[others[i]].any(0) & inside[i]).sum()
            ok[i] &= bool(covered <= cfg.eps_cov * inside[i].sum().clamp_min(1))
    else:  # mask_disjoint
        if masks is None:
            raise ValueError("tutor_eligible: pc.nonoverlap='mask_disjoint' needs the pseudo masks")
        binm = masks > cfg.mask_thresh
        h, w = binm.shape[-2:]
        stride_x = (image_size[1] / w) if image_size else 1.0
        stride_y = (image_size[0] / h) if image_size else 1.0
        # Objects without a valid mask are represented by their box (conservative).
        grid_boxes = boxes / boxes.new_tensor([stride_x, stride_y, stride_x, stride_y])
        region = torch.where(valid.bool()[:, None, None], binm, box_masks(grid_boxes, h, w))
        flat = region.flatten(1).float()
        inter = flat @ flat.t()
        ok &= ~((inter > 0) & others).any(1)
    if cfg.reject_border_tutors:
        if image_size is None:
            raise ValueError("tutor_eligible: pc.reject_border_tutors needs image_size")
        hh, ww = image_size
        touch = (boxes[:, 0] <= 0.5) | (boxes[:, 1] <= 0.5) | (boxes[:, 2] >= ww - 0.5) | (boxes[:, 3] >= hh - 0.5)
        ok &= ~touch
    return ok


def _crop_bounds(box: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, math.floor(float(box[0]))), max(0, math.floor(float(box[1])))
    x1, y1 = min(w, math.ceil(float(box[2]))), min(h, math.ceil(float(box[3])))
    return x0, y0, x1, y1


def _resample_crop(mask: torch.Tensor, bounds: tuple[int, int, int, int], stride: float) -> torch.Tensor:
    """Bilinear values of a (h,w) map at stride `stride` at the centres of pixels [x0,x1) x [y0,y1)."""
    x0, y0, x1, y1 = bounds
    hh, ww = mask.shape
    xs = (torch.arange(x0, x1, dtype=torch.float32, device=mask.device) + 0.5) / stride
    ys = (torch.arange(y0, y1, dtype=torch.float32, device=mask.device) + 0.5) / stride
    gx, gy = 2 * xs / ww - 1, 2 * ys / hh - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    return F.grid_sample(mask[None, None].float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0, 0]


def collect_tutors(bank: MemoryBank, image: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
                   masks: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor, cfg: PCConfig,
                   mask_stride: float = 1.0, scale: float = 1.0) -> int:
    """Push the eligible objects of one image into the bank (before any paste). Returns the count.

    image (3,H,W) uint8/float RGB of the view (teacher view in BoxSeg); boxes (n,4) in its pixels; masks (n,h,w)
    soft pseudo masks at `mask_stride`; `scale` = view pixels per original-image pixel.
    """
    h, w = image.shape[-2:]
    eligible = tutor_eligible(boxes, weights, valid, cfg, masks=masks, image_size=(h, w))
    pushed = 0
    for i in torch.nonzero(eligible).flatten().tolist():
        bounds = _crop_bounds(boxes[i], h, w)
        x0, y0, x1, y1 = bounds
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        m = _resample_crop(masks[i], bounds, mask_stride) > cfg.mask_thresh
        if not bool(m.any()):
            continue
        patch = image[:, y0:y1, x0:x1].float().round().clamp(0, 255).to(torch.uint8).cpu()
        bank.push(Tutor(patch=patch, mask=m.cpu(), cls=int(classes[i]), w=float(weights[i]), scale=float(scale)))
        pushed += 1
    return pushed


@dataclass
class PasteInfo:
    """What happened on one image (for logging and tests)."""

    pasted: int = 0
    skipped: int = 0
    dropped: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    tutor_masks: list[torch.Tensor] = field(default_factory=list)


class PeerCopyPaste:
    """Teach learners and update the annotations on one student image (docs/method.md
    "Peer-assisted Copy-paste")."""

    def __init__(self, cfg: PCConfig | None = None) -> None:
        self.cfg = cfg or PCConfig()

    # -- tutor geometry -------------------------------------------------------------------------------------
    def _prepare_tutor(self, tutor: Tutor, student_scale: float, h: int, w: int,
                       gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescale the tutor to its original size in the student frame, shrink to fit, random h-flip."""
        ph, pw = tutor.mask.shape
        f = student_scale / max(tutor.scale, 1e-12)
        f = min(f, h / ph, w / pw)  # shrink until it fits in the image
        nh, nw = max(1, round(ph * f)), max(1, round(pw * f))
        patch = tutor.patch.float()
        mask = tutor.mask.float()
        if (nh, nw) != (ph, pw):
            patch = F.interpolate(patch[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None], size=(nh, nw), mode="bilinear", align_corners=False)[0, 0]
        flip = self.cfg.tutor_flip > 0 and float(torch.rand((), generator=gen)) < self.cfg.tutor_flip
        if flip:
            patch, mask = patch.flip(-1), mask.flip(-1)
        return patch, mask > 0.5

    def _choose_learner(self, cand: torch.Tensor, weights: torch.Tensor, gen: torch.Generator | None) -> int:
        if self.cfg.learner_sampling == "inverse_quality":
            p = (1.0 - weights[cand].float()).clamp_min(0)
            if float(p.sum()) <= 0:
                p = torch.ones_like(p)
        else:
            p = torch.ones(cand.shape[0])
        return int(cand[torch.multinomial(p.cpu(), 1, generator=gen)])

    # -- main entry -----------------------------------------------------------------------------------------
    def __call__(self, image: torch.Tensor, targets: dict, bank: MemoryBank, student_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict, PasteInfo]:
        """Paste up to `pastes_per_image` tutors. image (3,H,W) (uint8 or float), the valid (unpadded) region.
        Returns the composite image, the updated targets and a PasteInfo."""
        cfg, gen = self.cfg, generator
        info = PasteInfo()
        t = dict(targets)
        n = t["boxes"].shape[0]
        h, w = image.shape[-2:]
        if "is_tutor" not in t:
            t["is_tutor"] = torch.zeros(n, dtype=torch.bool, device=t["boxes"].device)
        if t["pseudo_masks"].shape[-2:] != (h, w):
            raise ValueError(f"PeerCopyPaste: pseudo_masks are {tuple(t['pseudo_masks'].shape[-2:])}, expected the "
                             f"image size {(h, w)} (student frame, full resolution)")
        if not cfg.enabled or len(bank) == 0:
            return image, t, info
        out = image.clone()
        for _ in range(cfg.pastes_per_image):
            placed = self._paste_once(out, t, bank, student_scale, gen, info)
            if placed is None:
                info.skipped += 1
                continue
            out, t = placed
            info.pasted += 1
        return out, t, info

    def _paste_once(self, image: torch.Tensor, t: dict, bank: MemoryBank, student_scale: float,
                    gen: torch.Generator | None, info: PasteInfo) -> tuple[torch.Tensor, dict] | None:
        cfg = self.cfg
        h, w = image.shape[-2:]
        boxes, valid = t["boxes"], t["pseudo_valid"].bool()
        binm = t["pseudo_masks"] > cfg.mask_thresh
        learner = -1
        if cfg.placement == "overlap":
            cand = torch.nonzero(valid & binm.flatten(1).any(1) & (_box_area(boxes) > 0)).flatten()
            if cand.numel() == 0:
                return None
            learner = self._choose_learner(cand, t["pseudo_weights"], gen)
        tutor = bank.sample(gen, weighted=cfg.selection == "importance")
        patch, tmask = self._prepare_tutor(tutor, student_scale, h, w, gen)
        ph, pw = tmask.shape
        tmask_dev = tmask.to(binm.device)
        if cfg.placement == "overlap":
            lm = binm[learner]
            lm_area = lm.sum()
        placement = None
        for _ in range(cfg.max_tries):
            if cfg.placement == "overlap":
                bx = boxes[learner].float()
                cx = float(bx[0]) + float(torch.rand((), generator=gen)) * float(bx[2] - bx[0])
                cy = float(bx[1]) + float(torch.rand((), generator=gen)) * float(bx[3] - bx[1])
                x0 = min(max(round(cx - pw / 2), 0), w - pw)
                y0 = min(max(round(cy - ph / 2), 0), h - ph)
            else:
                x0 = int(torch.randint(w - pw + 1, (), generator=gen))
                y0 = int(torch.randint(h - ph + 1, (), generator=gen))
            if cfg.placement == "overlap":
                # The learner pixels the tutor would cover: only the tutor's window can hit (same counts as over
                # the whole image, without an image-sized mask per try).
                hidden = lm[y0:y0 + ph, x0:x0 + pw] & tmask_dev
                n_hidden = hidden.sum()
                visible = (lm_area - n_hidden) / lm_area.clamp_min(1)
                if not (bool(n_hidden > 0) and float(visible) >= cfg.rho_min_visible):
                    continue
            placement = (x0, y0)
            break
        if placement is None:
            return None
        x0, y0 = placement
        full = torch.zeros(h, w, dtype=torch.bool, device=binm.device)
        full[y0:y0 + ph, x0:x0 + pw] = tmask_dev
        info.learners.append(learner)
        info.tutor_masks.append(full)
        image = self._composite(image, patch, tmask, x0, y0)
        new, dropped = update_annotations(t, full, tutor.cls, tutor.w, self.cfg)
        info.dropped.extend(dropped)
        return image, new

    def _composite(self, image: torch.Tensor, patch: torch.Tensor, tmask: torch.Tensor, x0: int, y0: int
                   ) -> torch.Tensor:
        ph, pw = tmask.shape
        region = image[:, y0:y0 + ph, x0:x0 + pw].float()
        if self.cfg.blend == "hard":
            alpha = tmask.float()
        else:
            # Feathered edge: a 3x3 mean of the mask, but every tutor pixel stays fully tutor (the annotation is
            # the hard mask, so no learner colour may remain under it).
            soft = F.avg_pool2d(tmask.float()[None, None], 3, stride=1, padding=1)[0, 0]
            alpha = torch.where(tmask, torch.ones_like(soft), soft)
        alpha = alpha.to(region.device)[None]
        mixed = alpha * patch.to(region.device) + (1 - alpha) * region
        out = image.clone()
        if not image.dtype.is_floating_point:
            mixed = mixed.round().clamp(0, 255)
        out[:, y0:y0 + ph, x0:x0 + pw] = mixed.to(image.dtype)
        return out


def update_annotations(t: dict, full: torch.Tensor, tutor_cls: int, tutor_w: float, cfg: PCConfig
                       ) -> tuple[dict, list[int]]:
    """The annotation update after pasting a tutor whose mask in the image is `full` (H,W) bool: cut occluded
    masks, drop covered objects (visible fraction <= min_visible_frac, or nothing visible), re-tighten boxes
    (box_update), and append the tutor (class, tight box of its mask, mask, w, valid, is_tutor). Returns
    (targets, dropped)."""
    h, w = full.shape
    boxes = t["boxes"].float().clone()
    valid = t["pseudo_valid"].bool()
    masks = t["pseudo_masks"]  # read only: the occlusion product below makes the new masks
    n = boxes.shape[0]
    if "is_tutor" not in t:
        t = {**t, "is_tutor": torch.zeros(n, dtype=torch.bool, device=boxes.device)}
    binm = masks > cfg.mask_thresh
    box_region = box_masks(boxes, h, w)
    # What each object is: its binarised pseudo mask if valid, else its box region.
    region = torch.where(valid[:, None, None], binm, box_region)
    covered = (region & full[None]).flatten(1).any(1)
    vis = (region & ~full[None]).flatten(1).sum(1)
    frac = vis / region.flatten(1).sum(1).clamp_min(1)
    drop = covered & ((vis == 0) | (frac <= cfg.min_visible_frac))
    masks = masks * (~full)[None].to(masks.dtype)  # no occluded pixel keeps a mask under the tutor
    upd = torch.nonzero(covered & ~drop).flatten() if cfg.box_update != "keep" else covered.new_zeros(0)
    if upd.numel():  # only the partly covered objects get a new box
        use_mask = valid[upd] & (cfg.box_update == "mask")
        # Tight box of the visible mask (clipped to the old box), or of the box region minus the paste.
        src = torch.where(use_mask[:, None, None], masks[upd] > cfg.mask_thresh, box_region[upd] & ~full[None])
        tb, nonempty = tight_boxes(src)
        old = boxes[upd]
        tb = torch.cat([torch.maximum(tb[:, :2], old[:, :2]), torch.minimum(tb[:, 2:], old[:, 2:])], 1)
        boxes[upd] = torch.where(nonempty[:, None], tb, old)
    keep = ~drop
    new = dict(t)
    new["boxes"] = boxes.to(t["boxes"].dtype)
    new["pseudo_masks"] = masks
    for key in _PER_OBJECT:
        if key in new and new[key].shape[0] == n:
            new[key] = new[key][keep]
    tbox, _ = tight_boxes(full[None])
    new["boxes"] = torch.cat([new["boxes"], tbox.to(new["boxes"].device, new["boxes"].dtype)])
    new["classes"] = torch.cat([new["classes"], new["classes"].new_tensor([tutor_cls])])
    new["pseudo_masks"] = torch.cat([new["pseudo_masks"], full[None].to(new["pseudo_masks"].dtype)])
    new["pseudo_weights"] = torch.cat([new["pseudo_weights"], new["pseudo_weights"].new_tensor([tutor_w])])
    new["pseudo_valid"] = torch.cat([new["pseudo_valid"], new["pseudo_valid"].new_tensor([True])])
    new["is_tutor"] = torch.cat([new["is_tutor"], new["is_tutor"].new_tensor([True])])
    return new, torch.nonzero(drop).flatten().tolist()
