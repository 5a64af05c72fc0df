"""One epoch of training and one pass of evaluation, read top to bottom.

Batches arrive on the device (resident tensors or a DataLoader moved there). On CUDA the forward
runs under bf16 autocast with channels_last inputs; losses and accuracy accumulate on the device and
are read back once per epoch (one sync), where a non-finite loss stops the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F


LossOf = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]   # (logits, x, y) -> scalar


class NonFiniteLoss(RuntimeError):
    pass


class EmptyEpoch(RuntimeError):
    """A training epoch saw no batch: never a 'finished' run with loss 0.000."""


@dataclass
class EpochStats:
    loss: float
    acc: float          # percent


def _prepare(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def train_epoch(model: torch.nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                lr_at: Callable[[int], float], after_step: Callable[[int], None],
                before_batch: Callable[[], None], device: torch.device, amp: bool,
                channels_last: bool, epoch: int, loss_of: LossOf | None = None) -> EpochStats:
    """lr_at(it) gives the LR of iteration `it`; after_step(it) runs after every optimiser step; loss_of(logits,
    x, y): the loss (a teacher's distillation, running/teacher.py), else the cross-entropy."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for it, (x, y) in enumerate(batches):
        before_batch()
        x, y = _prepare(x, y, device, channels_last)
        lr = lr_at(it)
        for pg in optimizer.param_groups:
            pg["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)                                       # (N, classes)
            loss = F.cross_entropy(logits.float(), y) if loss_of is None else loss_of(logits, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after_step(it)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    if seen == 0:
        raise EmptyEpoch(f"epoch {epoch} had no training batch: the loader yields nothing (drop_last with "
                         f"fewer images than the batch size?)")
    total = float(loss_sum) / seen
    if not torch.isfinite(torch.tensor(total)):
        raise NonFiniteLoss(f"training loss became {total} in epoch {epoch}: lower lr or the regulariser")
    return EpochStats(total, 100.0 * float(correct) / max(seen, 1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, device: torch.device, amp: bool,
             channels_last: bool, on_batch: Callable[[], None] | None = None) -> EpochStats:
    """Loss and accuracy on `batches`; on_batch() before each (the run's heartbeat: long evaluations
    must not look stale)."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in batches:
        if on_batch is not None:
            on_batch()
        x, y = _prepare(x, y, device, channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return EpochStats(float(loss_sum) / max(seen, 1), 100.0 * float(correct) / max(seen, 1))
