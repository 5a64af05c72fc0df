"""One run over several processes started by torchrun: DistributedDataParallel, NCCL on GPUs, gloo on CPU.

The method's decisions must be identical on every rank, or the ranks prune different channels and
hang (Torch-Pruning issues #252, #281). So: the candidate searched on rank 0 is broadcast to every
rank (and each rank's own search is compared with it); rank 0's commands (prune now, threshold,
auto-prune) are broadcast at every epoch boundary and a cancel is agreed at every batch; the prune is
applied on every rank to the unwrapped model, which is then wrapped again; a digest of what each rank
kept is compared after it. Only rank 0 writes the run folder (the store, checkpoints, model.pt); the
other ranks write to a `NullStore`.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (size 1: no torchrun, no collectives)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (any picklable object)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any (one tiny all-reduce)."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks (each rank's shard is the same size, up to one image)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item()) / self.size

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module a training step runs: `model` itself, or a new DistributedDataParallel around it
        (after a prune the old wrapper holds the old parameters: always wrap again)."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def join_world(device: str) -> World:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL when this rank uses CUDA, else gloo)
    and return this rank's World; otherwise World(). A pause in the studio may last long: the
    collectives wait up to a day rather than PyTorch's 30 minutes."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(days=1))
    return World(rank, size, local)


def leave_world(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def digest(masks: list[np.ndarray] | None) -> str:
    """A short fingerprint of a sub-network (per group, the kept channels), to compare ranks cheaply."""
    if masks is None:
        return "-"
    h = hashlib.sha1()
    for m in masks:
        h.update(np.packbits(np.asarray(m, dtype=bool)).tobytes())
    return h.hexdigest()[:16]


class NullStore:
    """The run store of ranks other than 0: accepts every write and keeps nothing (rank 0 writes)."""

    def __init__(self, run_dir) -> None:
        self.dir = run_dir

    def __getattr__(self, name):
        if name in ("update_run", "heartbeat", "write_groups", "write_epoch", "event", "write_controls",
                    "copy_history", "close"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def take_commands(self) -> list:
        return []

    def transaction(self):
        import contextlib
        return contextlib.nullcontext()


def shard_loader(train, world: World, cfg):
    """Each rank's shard of every epoch: resident tensors keep every world-th image of each global batch
    (TensorLoader.shard); a DataLoader is rebuilt on a DistributedSampler with batch_size / world
    images per rank, so the global batch and the iterations per epoch stay those of one process."""
    if world.size == 1:
        return train
    if cfg.batch_size % world.size:
        from ..method.config import ConfigError
        raise ConfigError(f"batch_size {cfg.batch_size} does not split over {world.size} processes: "
                          f"use a multiple of {world.size}")
    if hasattr(train, "shard"):
        return train.shard(world.rank, world.size)
    from torch.utils.data import DataLoader, DistributedSampler
    sampler = DistributedSampler(train.dataset, world.size, world.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    return DataLoader(train.dataset, batch_size=cfg.batch_size // world.size, sampler=sampler,
                      num_workers=train.num_workers, pin_memory=train.pin_memory, drop_last=True)


def set_epoch(train, epoch: int) -> None:
    """A DistributedSampler's shuffle for this epoch (the same on every rank)."""
    sampler = getattr(train, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def check_ranks_agree(world: World, store, epoch: int, kept: list[np.ndarray] | None, model: torch.nn.Module) -> None:
    """After a prune: every rank's kept channels and parameter count, compared; rank 0 records them as a
    'ranks' event. Ranks that disagree would train different networks: the run fails on every rank."""
    if world.size == 1:
        return
    mine = dict(rank=world.rank, epoch=epoch, kept=digest(kept), params=sum(p.numel() for p in model.parameters()))
    every = world.gather(mine)
    same = all((r["epoch"], r["kept"], r["params"]) == (every[0]["epoch"], every[0]["kept"], every[0]["params"])
               for r in every)
    store.event("ranks", f"{world.size} ranks pruned after epoch {epoch}: "
                         + ("the same channels" if same else "DIFFERENT channels"), epoch=epoch, ranks=every)
    if not same:
        raise RuntimeError(f"the ranks pruned different channels after epoch {epoch}: {every}")
