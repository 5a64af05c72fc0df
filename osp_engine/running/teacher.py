"""The teacher of the fine-tuning (distill > 0): the dense network at the prune, frozen, and its loss.

The Pruner makes it at the prune from the network one moment before its channels go, keeps its weights
in every checkpoint after (a resume restores it: `restored`), and gives the fine-tuning's loss to
whoever trains (`loss`: the Run's loop, or your own through `Pruner.fine_tuning_loss`). Called inside
the student's autocast block, the teacher's forward runs under the same precision policy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..method.config import Config, ConfigError
from ..method.distill import distillation_loss, frozen_teacher

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def teacher_device(cfg: Config, run_device: torch.device) -> torch.device:
    """Where the teacher runs: cfg.teacher_device, else the run's device; ConfigError for CUDA without one."""
    if not cfg.teacher_device:
        return torch.device(run_device)
    if cfg.teacher_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("teacher_device=cuda but no CUDA device is visible: leave it empty or use cpu")
    return torch.device(cfg.teacher_device)


@dataclass
class Teacher:
    model: nn.Module              # frozen, eval mode, on `device` in `dtype`
    alpha: float
    temperature: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def of(cls, dense: nn.Module, cfg: Config) -> "Teacher":
        """A frozen copy of `dense` (the network about to be pruned) as cfg says."""
        device = teacher_device(cfg, next(dense.parameters()).device)
        dtype = DTYPES[cfg.teacher_precision]
        return cls(frozen_teacher(dense, device, dtype), cfg.distill, cfg.distill_temperature, device, dtype)

    @classmethod
    def restored(cls, dense: nn.Module, state: dict, cfg: Config) -> "Teacher":
        """The teacher of a checkpoint: `dense` (the network as built, not yet pruned again) with its weights."""
        teacher = cls.of(dense, cfg)
        teacher.model.load_state_dict(state)
        return teacher

    def state(self) -> dict:
        return self.model.state_dict()

    @property
    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes) float32 on x's device: the teacher's logits of the batch x."""
        with torch.no_grad():
            out = self.model(x.to(self.device, dtype=self.dtype if x.is_floating_point() else x.dtype))
        return out.float().to(x.device)

    def loss(self, student: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The fine-tuning loss of the student's logits (N, classes) on the batch (x, y): method/distill.py."""
        return distillation_loss(student.float(), self.logits(x), y, self.alpha, self.temperature)

    def describe(self) -> str:
        precision = "bfloat16" if self.dtype == torch.bfloat16 else "float32"
        return (f"distillation from the dense network at the prune: alpha {self.alpha:g}, T {self.temperature:g}; "
                f"teacher {self.weight_bytes / 1e6:.2f} MB of weights in {precision} on {self.device}")
