"""Training input: geometric augmentation, a resumable deterministic sampler, and padding collate.

Determinism: every sample's dataset index and augmentation draw are functions of (seed, global sample
position) only, where iteration ``it`` of a run with global batch ``B`` covers positions ``it*B .. it*B+B-1`` and
rank ``r`` of ``W`` takes the ``r``-th contiguous slice. So a run resumed at iteration k sees exactly the batches
of an uninterrupted run, with any number of DataLoader workers, and W ranks together see the same global batch
as one process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from boxseg.train.config import InputConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from boxseg.contract import pad_to, plan_resize

# ---------------------------------------------------------------------------------------------- geometry


def scaled_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) with the shorter side ``short`` and the longer side at most ``max_size`` (the contract's
    resize rule, ``boxseg.contract.plan_resize``, so the exported model's runtime resizes alike)."""
    return plan_resize(h, w, short, max_size)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float image -> (3, h, w) float, bilinear (antialiased when shrinking), values kept in 0..255."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 255.0)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) bool -> (n, h, w) bool, nearest neighbour."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[None].to(torch.uint8), size=size, mode="nearest")[0].bool()


def scale_boxes(boxes: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Boxes xyxy in an image of size ``src`` (h, w) -> the same boxes in the image resized to ``dst``."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def to_chw_float(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) 0..255."""
    t = torch.as_tensor(np.ascontiguousarray(image))
    if t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(t.shape)}")
    return t.permute(2, 0, 1).float().contiguous()


def augment(record: dict[str, Any], cfg: InputConfig, rng: np.random.Generator, with_masks: bool) -> dict:
    """Multi-scale resize (shorter side drawn from ``cfg.train_scales``) and horizontal flip of one record."""
    image = to_chw_float(record["image"])
    h, w = image.shape[-2:]
    short = int(rng.choice(np.asarray(cfg.train_scales)))
    flip = bool(rng.random() < cfg.hflip_prob)
    size = scaled_size(h, w, short, cfg.train_max_size)
    image = resize_image(image, size)
    boxes = scale_boxes(torch.as_tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4), (h, w), size)
    masks = None
    if with_masks:
        masks = resize_masks(torch.as_tensor(record["masks"], dtype=torch.bool), size)
    if flip:
        image = image.flip(-1)
        boxes = hflip_boxes(boxes, size[1])
        if masks is not None:
            masks = masks.flip(-1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[0])
    out = {
        "image": image,
        "boxes": boxes,
        "classes": torch.as_tensor(record["classes"], dtype=torch.int64).reshape(-1),
        "image_id": int(record["image_id"]),
        "orig_size": (int(h), int(w)),
        "flipped": flip,
    }
    if masks is not None:
        out["masks"] = masks
        # Per-object label quality and validity of a `boxseg label` dataset: geometry does not change them.
        for key in ("mask_quality", "mask_valid"):
            if key in record:
                out[key] = torch.as_tensor(record[key]).reshape(-1)
    return out


def eval_transform(image: np.ndarray, cfg: InputConfig) -> torch.Tensor:
    """The evaluation / prediction view: shorter side ``cfg.test_size``, no flip."""
    t = to_chw_float(image)
    h, w = t.shape[-2:]
    return resize_image(t, scaled_size(h, w, cfg.test_size, cfg.test_max_size))


# ---------------------------------------------------------------------------------------------- dataset


class TrainDataset(Dataset):
    """Wraps a ``CocoDataset``; indexed by ``(dataset_index, augmentation_seed)`` pairs from the sampler.

    ``keep_original``: also return the un-augmented image (uint8, 3 x H x W) for methods that need another view
    of it (the teacher's); the collated batch then has ``orig_images``.
    """

    def __init__(self, base: Any, cfg: InputConfig, with_masks: bool = False, keep_original: bool = False) -> None:
        report = getattr(base, "report", None)
        if isinstance(report, dict) and report.get("boxes") == 0:
            # Without a single box every loss is 0 and the run "succeeds" having learnt nothing.
            from boxseg.data.errors import DataError

            summary = base.summary() if hasattr(base, "summary") else str(report)
            raise DataError(f"the training set has no usable boxes ({summary}); expected at least one "
                            f"non-crowd annotation with a positive-size 'bbox' inside its image. Add annotations, "
                            f"or see the counts above for why boxes were dropped")
        self.base = base
        self.cfg = cfg
        self.with_masks = with_masks
        self.keep_original = keep_original

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, aug_seed = key
        rng = np.random.default_rng(aug_seed)
        record = self.base[index]
        out = augment(record, self.cfg, rng, self.with_masks)
        if self.keep_original:
            out["orig_image"] = torch.as_tensor(np.ascontiguousarray(record["image"])).permute(2, 0, 1).contiguous()
        return out


class IterationBatchSampler(Sampler):
    """Infinite batches of ``(index, aug_seed)`` for one rank, starting at ``start_iter``."""

    def __init__(self, num_samples: int, global_batch: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples <= 0:
            raise ValueError("the training dataset is empty")
        if global_batch % world_size:
            raise ValueError(
                f"solver.ims_per_batch={global_batch} must be divisible by the number of processes ({world_size})"
            )
        self.n = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.seed = seed
        self.start_iter = start_iter
        self.rank = rank
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def batch_for(self, iteration: int) -> list[tuple[int, int]]:
        first = iteration * self.global_batch + self.rank * self.local_batch
        batch = []
        for pos in range(first, first + self.local_batch):
            index = self._permutation(pos // self.n)[pos % self.n]
            batch.append((index, _mix(self.seed, pos, 0xA06)))
        return batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start_iter
        while True:
            yield self.batch_for(it)
            it += 1


def _mix(*values: int) -> int:
    """A well-spread 63-bit seed from integers (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------- collate


def collate(samples: Sequence[dict[str, Any]], size_divisor: int = 32) -> dict[str, Any]:
    """Pad images to a common size that is a multiple of ``size_divisor``; build the loss batch dict."""
    if not samples:
        raise ValueError("collate got an empty batch")
    hmax = pad_to(max(s["image"].shape[-2] for s in samples), size_divisor)
    wmax = pad_to(max(s["image"].shape[-1] for s in samples), size_divisor)
    images = samples[0]["image"].new_zeros((len(samples), 3, hmax, wmax))
    targets = []
    for i, s in enumerate(samples):
        h, w = s["image"].shape[-2:]
        images[i, :, :h, :w] = s["image"]
        t = {"boxes": s["boxes"], "classes": s["classes"]}
        if "masks" in s:
            m = s["masks"]
            padded = m.new_zeros((m.shape[0], hmax, wmax))
            padded[:, :h, :w] = m
            t["masks"] = padded
        for key in ("mask_quality", "mask_valid"):
            if key in s:
                t[key] = s[key]
        targets.append(t)
    batch = {
        "images": images,
        "image_sizes": [tuple(s["image"].shape[-2:]) for s in samples],
        "targets": targets,
        # How each view was made from its original image (resize to image_sizes[i], then flip if flipped[i]).
        "image_ids": [s["image_id"] for s in samples],
        "orig_sizes": [s["orig_size"] for s in samples],
        "flipped": [s["flipped"] for s in samples],
    }
    if "orig_image" in samples[0]:
        batch["orig_images"] = [s["orig_image"] for s in samples]
    return batch


class _Collate:
    # A picklable callable, so DataLoader workers started with spawn can use it.
    def __init__(self, size_divisor: int) -> None:
        self.size_divisor = size_divisor

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate(samples, self.size_divisor)


def default_workers(device: str) -> int:
    return 2 if device.startswith("cuda") else 0


def build_train_loader(dataset: TrainDataset, global_batch: int, seed: int, start_iter: int = 0,
                       rank: int = 0, world_size: int = 1, workers: int = 0,
                       pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """An endless iterator of collated batches for this rank, beginning at ``start_iter``."""
    sampler = IterationBatchSampler(len(dataset), global_batch, seed, start_iter, rank, world_size)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_Collate(dataset.cfg.size_divisor),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        # Its own generator: creating the iterator must not draw from the global torch RNG (resume equality).
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    out = dict(batch)
    out["images"] = batch["images"].to(device, non_blocking=non_blocking)
    if "orig_images" in batch:
        out["orig_images"] = [im.to(device, non_blocking=non_blocking) for im in batch["orig_images"]]
    out["targets"] = [
        {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in t.items()}
        for t in batch["targets"]
    ]
    return out
