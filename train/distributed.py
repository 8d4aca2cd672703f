"""Multi-process training under ``torchrun``: process-group set-up, DDP wrapping, small collectives.

``torchrun --nproc_per_node N -m boxseg.cli.train ...`` (or ``boxseg train`` launched by torchrun) sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them training runs as a single process.
Backend: nccl on CUDA, gloo on CPU. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from boxseg.train.config import ConfigError
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def rank() -> int:
    """This process's rank (0 outside torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group described by torchrun's environment; a no-op for a single process."""
    if not launched_by_torchrun():
        return DistInfo()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """``cuda`` under torchrun means this process's GPU (LOCAL_RANK)."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"runtime.device={device!r} but torch sees no CUDA GPU; use --device cpu")
        if info.enabled or device == "cuda":
            return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
        return torch.device(device)
    if device != "cpu":
        raise ConfigError(f"runtime.device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return torch.device("cpu")


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP wrapper for the forward pass (the raw module stays the one that is saved and evaluated)."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # No buffer broadcast: BatchNorm is frozen (docs/method.md "Student network"); GroupNorm has no buffers.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def all_reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average scalar values over ranks (for logging); identity for a single process."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is true on at least one rank (so every rank stops together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        # All ranks reach teardown together: a rank that destroys its gloo pairs while a peer is still inside a
        # collective can abort that peer (seen as "terminate called without an active exception" under load).
        dist.barrier()
        dist.destroy_process_group()
