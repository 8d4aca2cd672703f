"""SIM's pseudo-labeller, as plain tensor functions (SIM Sec. 3; docs/method.md "SIM").

One image, teacher frame, mask grid of the dynamic head:
  - `Prototypes`: L sub-centres per class on the L2-normalised mask features, assigned by Sinkhorn-Knopp (SIM
    Eqs. 2-3, hard argmax) and updated with momentum (Eqs. 4-5);
  - `Prototypes.semantic_map`: M_S of Eq. 1, the class's map given to every object of that class;
  - `instance_map`: M_I of Eq. 6, the exp(mu * IoU)-weighted mean of the masks predicted at a GT's positives;
  - `self_correct`: Eq. 7, (1 - alpha) M_S + alpha M_I;
  - `importance`: Eq. 11's S_k, which SIM's copy-paste draws tutors by (`MemoryBank.sample(weighted=True)`).
The ignore band (hard targets where the blend is >= tau_high or <= tau_low, weight 0 in between: Eq. 8's W)
and the mask loss that honours it are in `boxseg.train.losses.sim`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from boxseg.ops import box_iou

from ..losses.fcos import assign_image, level_ranges
from ..losses.sim import ignore_band
from .common import box_masks, weighted_fusion
from .config import SIMConfig


def sinkhorn(scores: torch.Tensor, eps: float, iters: int = 3) -> torch.Tensor:
    """Entropy-regularised transport of N pixels onto L sub-centres with equal mass per sub-centre (SIM Eq. 3).

    scores (N, L) = <z_i, p_l>. Returns Q (N, L) >= 0 with column sums 1/L and row sums 1/N after convergence
    (the last normalisation, over rows, holds exactly). Iterated in the log domain in float64, so a small eps
    neither overflows nor empties a row by underflow.
    """
    n, l = scores.shape
    if n == 0:
        return scores.new_zeros(0, l)
    logq = scores.double() / eps
    for _ in range(iters):
        logq = logq - torch.logsumexp(logq, 0, keepdim=True) - math.log(l)  # each sub-centre gets 1/L
        logq = logq - torch.logsumexp(logq, 1, keepdim=True) - math.log(n)  # each pixel gives 1/N
    return logq.exp().to(scores.dtype)


class Prototypes(nn.Module):
    """L sub-centres per class, kept as buffers so they travel with checkpoints (SIM Eqs. 1-5).

    A class's sub-centres start from L of its first pixels (drawn with `generator`), not from random vectors: with
    momentum 0.999 a random start would still weigh (0.999)^640 = 0.53 after a 640-iteration CPU-protocol run.
    """

    def __init__(self, num_classes: int, dim: int, per_class: int = 10, momentum: float = 0.999,
                 temperature: float = 1.0, eps: float = 0.05, sinkhorn_iters: int = 3) -> None:
        super().__init__()
        self.per_class = per_class
        self.momentum = momentum
        self.temperature = temperature
        self.eps = eps
        self.sinkhorn_iters = sinkhorn_iters
        self.register_buffer("protos", torch.zeros(num_classes, per_class, dim))
        self.register_buffer("ready", torch.zeros(num_classes, dtype=torch.bool))

    def semantic_map(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """M_S for each object: sigmoid(max_l <z, p^c_l> / tau) (Eq. 1). z (D, H, W) normalised, classes (G,).

        Returns (G, H, W); an object of a class without prototypes yet gets 0.5 everywhere (no evidence), which
        the ignore band then ignores unless the instance map decides.
        """
        g = classes.shape[0]
        h, w = z.shape[-2:]
        if g == 0:
            return z.new_zeros(0, h, w)
        sim = torch.einsum("gld,dhw->glhw", self.protos[classes].to(z.dtype), z).amax(1)
        m = torch.sigmoid(sim / self.temperature)
        return torch.where(self.ready[classes][:, None, None], m, torch.full_like(m, 0.5))

    @torch.no_grad()
    def update(self, z: torch.Tensor, fg: torch.Tensor, classes: torch.Tensor,
               generator: torch.Generator | None = None) -> dict[str, int]:
        """One image's momentum update (Eqs. 2-5). z (D, H, W) normalised; fg (G, H, W) bool, the current pseudo
        masks' foreground; classes (G,). Pixels of class c = the union of its objects' foreground.

        Returns counts for telemetry: classes updated, pixels assigned.
        """
        stats = {"classes": 0, "pixels": 0}
        if classes.numel() == 0:
            return stats
        feats = z.flatten(1).t()  # (HW, D)
        for c in torch.unique(classes).tolist():
            pix = fg[classes == c].any(0).flatten()
            x = feats[pix]
            if x.shape[0] == 0:
                continue
            stats["classes"] += 1
            stats["pixels"] += int(x.shape[0])
            if not bool(self.ready[c]):
                pick = torch.randint(x.shape[0], (self.per_class,), generator=generator, device="cpu")
                self.protos[c] = F.normalize(x[pick.to(x.device)], dim=1).to(self.protos.dtype)
                self.ready[c] = True
                continue
            p = self.protos[c].to(x.dtype)
            assign = sinkhorn(x @ p.t(), self.eps, self.sinkhorn_iters).argmax(1)  # hard assignment (Eq. 5)
            counts = torch.bincount(assign, minlength=self.per_class).to(x.dtype)
            sums = x.new_zeros(self.per_class, x.shape[1]).index_add_(0, assign, x)
            has = counts > 0
            mean = sums / counts.clamp_min(1)[:, None]
            new = self.momentum * p + (1 - self.momentum) * mean
            self.protos[c] = torch.where(has[:, None], F.normalize(new, dim=1), p).to(self.protos.dtype)
        return stats

    @torch.no_grad()
    def sync(self) -> None:
        """Under DDP, give every rank the same prototypes: each sub-centre becomes the normalised mean of the
        ranks' that have the class (a class one rank has not seen yet takes the others'). After the first sync
        the ranks' sub-centre l are one vector moved by small momentum steps, so averaging them index by index
        is, to first order, the update from the whole batch's pixels. A no-op outside a process group."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        count = self.ready.to(self.protos.dtype)
        summed = self.protos * count[:, None, None]
        dist.all_reduce(summed)
        dist.all_reduce(count)
        have = count > 0
        self.protos.copy_(torch.where(have[:, None, None], F.normalize(summed, dim=2), self.protos))
        self.ready.copy_(have)


def instance_map(cand_probs: torch.Tensor, cand_ious: torch.Tensor, gt_idx: torch.Tensor, num_gt: int,
                 mu: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """M_I of SIM Eq. 6: per GT, sum over its positives of softmax_pos(mu * IoU(pred box, GT box)) * m_pos.

    cand_probs (M, H, W) mask probabilities, cand_ious (M,), gt_idx (M,) the GT each positive belongs to.
    Returns (G, H, W) and has (G,) (False: the GT has no positive, its map is 0).
    """
    weights = torch.exp(mu * cand_ious.to(cand_probs.dtype).clamp(0, 1))  # <= e^mu: no overflow for mu <= 80
    fused, wsum = weighted_fusion(cand_probs, gt_idx, weights, num_gt)
    return fused, wsum > 0


def self_correct(semantic: torch.Tensor, instance: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SIM Eq. 7: the blend (1 - alpha) M_S + alpha M_I."""
    return (1 - alpha) * semantic + alpha * instance


def importance(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SIM Eq. 11: S_k = mean of prob over the pixels labelled foreground; 0 for an object with none. (G,)."""
    fg = target > 0.5
    cnt = fg.flatten(1).sum(1)
    tot = (prob * fg).flatten(1).sum(1)
    return torch.where(cnt > 0, tot / cnt.clamp_min(1).to(prob.dtype), torch.zeros_like(tot))


def positives(locations: torch.Tensor, strides: torch.Tensor, levels: torch.Tensor, pred_boxes: torch.Tensor,
              gt_boxes: torch.Tensor, sizes_of_interest: tuple[float, ...], center_radius: float,
              max_per_gt: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's positive samples of each GT (SIM Eq. 6's "positive samples"): the locations the FCOS
    assignment gives to it (the same rule that picks the student's positives), at most `max_per_gt` per GT, those
    whose predicted box overlaps the GT most. -> (location index (P,), GT index (P,), IoU (P,))."""
    lo, hi = level_ranges(sizes_of_interest, levels)
    idx = assign_image(locations, strides, lo, hi, gt_boxes.to(locations.dtype), center_radius)
    loc = torch.nonzero(idx >= 0).flatten()
    gt = idx[loc]
    if loc.numel() == 0:
        return loc, gt, pred_boxes.new_zeros(0)
    iou = box_iou(pred_boxes[loc].float(), gt_boxes.float())[torch.arange(loc.numel()), gt]
    # Rank within each GT by IoU (descending), keep the first max_per_gt: sort by (gt, -iou).
    order = torch.argsort(gt.double() * 4 - iou.double(), stable=True)
    loc, gt, iou = loc[order], gt[order], iou[order]
    first = torch.searchsorted(gt, gt, right=False)
    keep = (torch.arange(gt.numel(), device=gt.device) - first) < max_per_gt
    return loc[keep], gt[keep], iou[keep]


def sim_label(z: torch.Tensor, protos: Prototypes, m_i: torch.Tensor, has: torch.Tensor, gt_boxes: torch.Tensor,
              gt_classes: torch.Tensor, cfg: SIMConfig, mask_stride: int = 4) -> dict[str, torch.Tensor]:
    """SIM's pseudo labels for one image (Eqs. 1, 7 and the ignore band), teacher frame, mask grid.

    z (D, h, w) normalised mask features on the mask grid; m_i (G, h, w) the instance maps and has (G,) whether
    each GT has one (`instance_map` of Eq. 6, or QAM's fused masks and validity for SIM + QAM); gt_boxes (G, 4)
    pixels. Returns masks (G, h, w): the blend M-hat, zero outside the box (the loss derives targets and ignore
    weights from it with the same tau_low/tau_high); weights (G,): Eq. 11's importance S (telemetry, copy-paste
    sampling); valid (G,); foreground (G, h, w): the hard labels the prototypes learn from.
    """
    h, w = z.shape[-2:]
    inside = box_masks(gt_boxes.float() / mask_stride, h, w)
    degenerate = ((gt_boxes[:, 2:] - gt_boxes[:, :2]) < 1).any(1)
    m_s = protos.semantic_map(z, gt_classes)
    prob = self_correct(m_s, m_i.to(m_s.dtype), cfg.alpha) * inside
    valid = has & ~degenerate
    prob = torch.where(valid[:, None, None], prob, torch.zeros_like(prob))
    target, _ = ignore_band(prob, inside, cfg.tau_low, cfg.tau_high)
    return {"masks": prob, "weights": importance(prob, target) * valid, "valid": valid,
            "foreground": target.bool() & valid[:, None, None]}


@dataclass
class SIMLabeller:
    """What SIM's labelling keeps between iterations: its settings and the class prototypes. `learn`: update the
    prototypes from each labelled image (training), then `Prototypes.sync` them across DDP ranks; off, it only
    labels."""

    cfg: SIMConfig
    protos: Prototypes
    learn: bool = True
    generator: torch.Generator | None = None

    @classmethod
    def create(cls, cfg: SIMConfig, num_classes: int, feature_dim: int, seed: int = 0) -> SIMLabeller:
        protos = Prototypes(num_classes, feature_dim, cfg.per_class, cfg.proto_momentum, cfg.temperature,
                            cfg.sinkhorn_eps, cfg.sinkhorn_iters)
        return cls(cfg, protos, True, torch.Generator().manual_seed(seed))
