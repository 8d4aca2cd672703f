"""Pure-PyTorch references for every op in `boxseg.ops`.

These are the ground truth the fused C++/CUDA kernels are tested against, and the fallback when no compiler is
available. They favour clarity over speed. `pairwise_affinity_loss` here is our shifted-tensor form; the peers' own
formulation (AdelaiDet's unfold over the whole image) is `bench/ops.py: unfold_pairwise_loss`, a benchmark baseline
that `bench ops` times beside this one and tests hold equal to it.

Conventions shared by all ops (the kernels follow them exactly):
- Boxes are xyxy. A grid pixel (y, x) is inside a box when its centre lies in the closed box:
  ``x1 <= x + 0.5 <= x2`` and ``y1 <= y + 0.5 <= y2`` (see `box_masks`).
- Neighbour order for a kernel of size k and dilation d: row-major over the k x k window, centre removed, i.e. for
  k=3 the offsets (dy, dx) are (-d,-d), (-d,0), (-d,d), (0,-d), (0,d), (d,-d), (d,0), (d,d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "adaptive_k",
    "batched_nms",
    "box_iou",
    "box_masks",
    "color_similarity",
    "fuse_candidate_masks",
    "neighbour_offsets",
    "pairwise_affinity_loss",
    "rgb_to_lab",
    "select_candidates",
]

# sRGB (D65) -> XYZ matrix and D65 white point; the same constants as skimage.color.rgb2lab.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def neighbour_offsets(kernel_size: int = 3, dilation: int = 2) -> list[tuple[int, int]]:
    """(dy, dx) of the kernel_size**2 - 1 dilated neighbours, in the order of the similarity channels."""
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected an odd integer >= 3, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"dilation: expected an integer >= 1, got {dilation}")
    r = kernel_size // 2
    return [
        (dy * dilation, dx * dilation)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if (dy, dx) != (0, 0)
    ]


def kernel_size_from_channels(channels: int) -> int:
    """Kernel size k such that k*k - 1 == channels (8 -> 3, 24 -> 5)."""
    k = round(math.sqrt(channels + 1))
    if k * k - 1 != channels or k < 3 or k % 2 == 0:
        raise ValueError(f"color_sim: expected k*k-1 channels for an odd k >= 3 (e.g. 8), got {channels}")
    return k


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,255] -> CIE-LAB (D65), on the tensor's device and in its floating dtype."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (B,3,H,W) RGB, got shape {tuple(images.shape)}")
    x = images if images.is_floating_point() else images.float()
    c = x / 255.0
    c = torch.where(c > 0.04045, ((c + 0.055) / 1.055).pow(2.4), c / 12.92)
    m = torch.tensor(_RGB_TO_XYZ, dtype=c.dtype, device=c.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, c)
    white = torch.tensor(_WHITE_D65, dtype=c.dtype, device=c.device).view(1, 3, 1, 1)
    t = xyz / white
    f = torch.where(t > 0.008856, t.clamp_min(0).pow(1.0 / 3.0), 7.787 * t + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def _shift(x: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """out[..., y, x] = x[..., y+dy, x+dx] (zero outside), and the matching in-bounds mask (H, W)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    valid = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    if ys < ye and xs < xe:
        out[..., ys:ye, xs:xe] = x[..., ys + dy : ye + dy, xs + dx : xe + dx]
        valid[ys:ye, xs:xe] = True
    return out, valid


def color_similarity(
    images: torch.Tensor, kernel_size: int = 3, dilation: int = 2, theta: float = 2.0
) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,255] -> (B,k*k-1,H,W) similarity exp(-||LAB(p)-LAB(q)||/theta); 0 outside the image."""
    lab = rgb_to_lab(images)
    sims = []
    for dy, dx in neighbour_offsets(kernel_size, dilation):
        nb, valid = _shift(lab, dy, dx)
        dist = (lab - nb).pow(2).sum(1).sqrt()
        sims.append(torch.exp(-dist / theta) * valid)
    if not sims:
        return lab.new_zeros(lab.shape[0], 0, *lab.shape[-2:])
    return torch.stack(sims, dim=1)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N,4) xyxy in grid coordinates -> (N,H,W) bool, True where the pixel centre lies inside the box."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected (N,4) xyxy, got shape {tuple(boxes.shape)}")
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    b = boxes.to(dtype)
    xs = torch.arange(width, dtype=dtype, device=boxes.device) + 0.5
    ys = torch.arange(height, dtype=dtype, device=boxes.device) + 0.5
    in_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] <= b[:, 2:3])  # (N, W)
    in_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] <= b[:, 3:4])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def pairwise_affinity_loss(
    mask_logits: torch.Tensor,
    color_sim: torch.Tensor,
    img_idx: torch.Tensor,
    boxes: torch.Tensor,
    tau: float = 0.3,
    dilation: int = 2,
) -> torch.Tensor:
    """BoxInst pairwise loss (docs/method.md "Box-supervised mask loss"); materialises several (N,8,H,W) tensors.

    Mean over (instance, pixel inside its box, in-image neighbour with similarity >= tau) of
    -log(p*q + (1-p)*(1-q)), evaluated as -logaddexp(logsig(a)+logsig(b), logsig(-a)+logsig(-b)).
    Returns 0 (zero gradient) when no such triple exists.
    """
    n, h, w = mask_logits.shape
    k = kernel_size_from_channels(color_sim.shape[1])
    if color_sim.shape[-2:] != (h, w):
        raise ValueError(f"color_sim: expected spatial size {(h, w)}, got {tuple(color_sim.shape[-2:])}")
    if n == 0:
        return mask_logits.sum() * 0.0
    pad = (k // 2) * dilation
    x = mask_logits[:, None]
    log_fg = F.logsigmoid(x)
    log_bg = F.logsigmoid(-x)

    def unfold(t: torch.Tensor) -> torch.Tensor:
        u = F.unfold(t, kernel_size=k, dilation=dilation, padding=pad).view(n, k * k, h, w)
        centre = (k * k) // 2
        return torch.cat([u[:, :centre], u[:, centre + 1 :]], dim=1)

    log_same = torch.logaddexp(log_fg + unfold(log_fg), log_bg + unfold(log_bg))  # (N,8,H,W)
    ones = torch.ones(1, 1, h, w, dtype=mask_logits.dtype, device=mask_logits.device)
    in_image = unfold(ones.expand(n, 1, h, w)) > 0.5
    sim = color_sim[img_idx.long()].to(mask_logits.dtype)
    weight = (sim >= tau) & in_image & box_masks(boxes, h, w)[:, None]
    weight = weight.to(mask_logits.dtype)
    return (-log_same * weight).sum() / weight.sum().clamp_min(1.0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,4) x (M,4) xyxy -> (N,M) IoU; 0 where the union is empty (degenerate boxes never give NaN)."""
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def _score_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by score descending, ties by index ascending."""
    return torch.sort(scores, descending=True, stable=True).indices


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-aware greedy NMS. A box is dropped when its IoU with a kept, higher-ranked box of the same class is
    > iou_threshold. Rank = score descending, ties by index ascending. Returns kept indices (int64) in rank order."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = _score_order(scores)
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    cls_sorted = classes[order]
    for c in torch.unique(cls_sorted).tolist():
        idx = order[cls_sorted == c]  # rank order within the class
        over = (box_iou(boxes[idx], boxes[idx]) > iou_threshold).cpu().tolist()
        removed = [False] * len(over)
        for i in range(len(over)):
            if removed[i]:
                continue
            row = over[i]
            for j in range(i + 1, len(over)):
                if row[j]:
                    removed[j] = True
        kept = torch.tensor([not r for r in removed], dtype=torch.bool, device=boxes.device)
        keep[idx[kept]] = True
    return order[keep[order]]


def adaptive_k(
    areas: torch.Tensor,
    k_min: int = 2,
    k_max: int = 10,
    area_small: float = 1024.0,
    area_large: float = 9216.0,
) -> torch.Tensor:
    """BoxSeg Eq. 4: K linear in sqrt(area) between area_small and area_large, rounded half up, clamped. -> int64."""
    a = areas.to(torch.float64)
    side = a.clamp_min(0).sqrt()
    s_lo, s_hi = math.sqrt(area_small), math.sqrt(area_large)
    k_real = k_min + (k_max - k_min) * (side - s_lo) / (s_hi - s_lo)
    k_real = torch.where(a <= area_small, torch.full_like(a, k_min), k_real)
    k_real = torch.where(a >= area_large, torch.full_like(a, k_max), k_real)
    return torch.floor(k_real + 0.5).clamp(k_min, k_max).to(torch.long)


def select_candidates(
    cand_boxes: torch.Tensor,
    cand_scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    k: torch.Tensor,
    *,
    u_min: float = 0.0,
    require_class_match: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box-Quality Ranking (docs/method.md "Quality-Aware Module", BQR): per GT, the top-k candidates by IoU desc,
    ties by GT-class score desc, then candidate index asc; k_eff = min(k, pool size).

    cand_boxes (P,4), cand_scores (P,C), gt_boxes (G,4), gt_classes (G,), k (G,) or scalar.
    Returns (cand_idx, gt_idx, box_scores, box_ious), each (M,), grouped by GT ascending, in rank order.
    Optional filters (off by default): IoU >= u_min; candidate argmax class == GT class.
    """
    g, p = gt_boxes.shape[0], cand_boxes.shape[0]
    dev = cand_boxes.device
    k = torch.as_tensor(k, dtype=torch.long, device=dev).expand(g)
    if g == 0 or p == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty.clone(), cand_scores.new_zeros(0), cand_boxes.new_zeros(0)
    ious = box_iou(gt_boxes.to(cand_boxes.dtype), cand_boxes)  # (G,P)
    scores = cand_scores[:, gt_classes.long()].t()  # (G,P) GT-class score
    eligible = ious >= u_min
    if require_class_match:
        eligible &= cand_scores.argmax(1)[None, :] == gt_classes.long()[:, None]
    # Two stable sorts give lexicographic order (IoU desc, score desc, index asc); ineligible go last.
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices
    iou_key = torch.where(eligible, ious, torch.full_like(ious, -1.0)).gather(1, by_score)
    by_iou = torch.sort(iou_key, dim=1, descending=True, stable=True).indices
    order = by_score.gather(1, by_iou)  # (G,P)
    k_eff = torch.minimum(k.clamp_min(0), eligible.sum(1))
    kmax = int(k_eff.max().item()) if g else 0
    order = order[:, :kmax]
    take = torch.arange(kmax, device=dev)[None, :] < k_eff[:, None]
    gt_idx = torch.arange(g, device=dev)[:, None].expand(g, kmax)[take]
    cand_idx = order[take]
    return cand_idx, gt_idx, scores[gt_idx, cand_idx], ious[gt_idx, cand_idx]


def fuse_candidate_masks(
    cand_probs: torch.Tensor,
    gt_idx: torch.Tensor,
    box_scores: torch.Tensor,
    box_ious: torch.Tensor,
    gt_boxes: torch.Tensor,
    tau_m: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quality-aware Masks Fusion (BoxSeg Eq. 2) and Mask-Quality Scoring (Eq. 5), per-GT loop.

    Returns fused (G,H,W) = Eq. 2 mask cropped to the GT box, w (G,), valid (G,) bool. A GT is invalid (fused zeros,
    w 0) when no candidate has score > tau_m (or their gates sum to 0) or no fused pixel > tau_m lies in its box.
    """
    _, h, w = cand_probs.shape
    g = gt_boxes.shape[0]
    dtype = cand_probs.dtype
    fused = cand_probs.new_zeros(g, h, w)
    weights = cand_probs.new_zeros(g)
    valid = torch.zeros(g, dtype=torch.bool, device=cand_probs.device)
    inside = box_masks(gt_boxes, h, w)
    for i in range(g):
        sel = gt_idx == i
        s = box_scores[sel].to(dtype)
        u = box_ious[sel].to(dtype)
        above = s > tau_m
        gate = above.to(dtype) * (s * u).clamp_min(0).sqrt()
        gsum = gate.sum()
        if gsum <= 0:
            continue
        m_t = (gate[:, None, None] * cand_probs[sel]).sum(0) / gsum
        s_hat = s[above].mean()
        conf = (m_t > tau_m) & inside[i]
        if not bool(conf.any()):
            continue
        m_hat = m_t[conf].mean()
        fused[i] = m_t * inside[i]
        weights[i] = (s_hat * m_hat).sqrt()
        valid[i] = True
    return fused, weights, valid
