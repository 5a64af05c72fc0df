"""Distillation from the dense network at the prune (beyond the paper): the fine-tuning's loss.

At the prune the run holds the dense network of the stable epoch, one moment before its channels go:
a teacher that cost no training. With distill = alpha > 0 every fine-tuning step's loss is

    (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(Hinton et al. 2015; the T^2 keeps the soft term's gradients on the scale of the hard one's), the KL
averaged over the batch. With alpha = 0 nothing changes: no teacher is kept and the loss is the
cross-entropy alone, computed as before.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def soft_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch; logits (N, classes) float32."""
    kl = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return temperature ** 2 * kl


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """The fine-tuning loss of logits `student` and `teacher` (N, classes), float32, against `targets` (N,)."""
    return (1.0 - alpha) * F.cross_entropy(student, targets) + alpha * soft_term(student, teacher, temperature)


def backward_soft_share(loss: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, alpha: float,
                        temperature: float, scale: float = 1.0) -> None:
    """For a trainer that backpropagates its own `loss` (= scale * L, e.g. a loss scaler's s over gradient
    accumulation's steps) right after: backpropagate alpha * (scale * soft_term - loss) now, keeping the
    graph, so that the two backward passes leave the gradients of scale * ((1 - alpha) L + alpha * soft_term)."""
    (alpha * (scale * soft_term(student.float(), teacher, temperature) - loss)).backward(retain_graph=True)


def frozen_teacher(model: nn.Module, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> nn.Module:
    """A frozen copy of `model` (eval mode, no gradients) on `device` (default: the model's) in `dtype`."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = device or next(model.parameters()).device
    return teacher.to(device=device, dtype=dtype)
