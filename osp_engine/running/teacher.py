"""The teacher of the fine-tuning (distill > 0): the dense network at the prune, frozen, and its loss.

The Pruner makes it at the prune from the network one moment before its channels go, keeps its weights
in every checkpoint after (a resume restores it: `restored`), and gives the fine-tuning's loss to
whoever trains (`loss`: the Run's loop, or your own through `Pruner.fine_tuning_loss`). Called inside
the student's autocast block, the teacher's forward runs under the same precision policy.
"""
from __future__ import annotations

import time
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
    seconds: float = 0.0          # spent in the teacher's forward since this process made or restored it
    calls: int = 0

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
        """(N, classes) float32 on x's device: the teacher's logits of the batch x, its time counted (on CUDA
        after a synchronisation, so that the figure is the forward's and not the queue's)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model(x.to(self.device, dtype=self.dtype if x.is_floating_point() else x.dtype))
            out = out.float().to(x.device)
        if self.device.type == "cuda" or x.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def loss(self, student: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The fine-tuning loss of the student's logits (N, classes) on the batch (x, y): method/distill.py."""
        return distillation_loss(student.float(), self.logits(x), y, self.alpha, self.temperature)

    def figures(self) -> dict:
        """What the teacher events record of it: alpha, temperature, weight_bytes, device."""
        return {"alpha": self.alpha, "temperature": self.temperature, "weight_bytes": self.weight_bytes,
                "device": str(self.device)}

    def cost(self, tuning_s: float) -> str:
        """'its forward took 1.2 ms per step over 96 steps, 14 % of the fine-tuning's 0.8 s' (tuning_s: the
        fine-tuning epochs' seconds over the same stretch)."""
        per = 1e3 * self.seconds / max(self.calls, 1)
        return (f"its forward took {per:.2f} ms per step over {self.calls} steps, "
                f"{100 * self.seconds / max(tuning_s, 1e-9):.0f} % of the fine-tuning's {tuning_s:.1f} s")

    def describe(self) -> str:
        precision = "bfloat16" if self.dtype == torch.bfloat16 else "float32"
        return (f"distillation from the dense network at the prune: alpha {self.alpha:g}, T {self.temperature:g}; "
                f"teacher {self.weight_bytes / 1e6:.2f} MB of weights in {precision} on {self.device}")
