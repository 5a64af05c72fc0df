"""Learning-rate and regulariser schedules: pure functions of the epoch and iteration.

Because the LR is a function of (epoch, iteration), continuing it after the prune is just calling it
at epoch t*+1: the new optimiser sees exactly the schedule the dense one would have.
"""
from __future__ import annotations

import math

from .config import Config


def learning_rate(cfg: Config, epoch: int, it: int, iters_per_epoch: int) -> float:
    """LR at iteration `it` of `epoch`, stepped per iteration.

    multistep: lr * gamma^(number of milestones m*T passed); cosine: lr/2 * (1 + cos(pi * progress/T)).
    """
    progress = epoch + it / max(iters_per_epoch, 1)                  # in epochs
    if cfg.lr_schedule == "cosine":
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * progress / cfg.epochs))
    passed = sum(1 for m in cfg.milestones if progress >= round(m * cfg.epochs))
    return cfg.lr * cfg.gamma ** passed


def fixed_sl_start(cfg: Config) -> int:
    """First epoch of the shrink with a fixed start: the official CIFAR scripts act while t > sl_start + 1."""
    return cfg.sl_start + 2


def auto_sl_start(epoch: int, psi_smoothed: dict[int, float], tol: float = 1e-4) -> bool:
    """Automatic start (official ImageNet script): epoch > 3 and J_avg(t) - J_avg(t-2) <= tol.

    psi_smoothed maps an epoch to its smoothed score; epochs not searched are absent.
    """
    if epoch <= 3 or epoch not in psi_smoothed or epoch - 2 not in psi_smoothed:
        return False
    return psi_smoothed[epoch] - psi_smoothed[epoch - 2] <= tol


def reg_strength(cfg: Config, epoch: int, t_sl_start: int | None) -> float:
    """reg at `epoch`: 0 before t_sl_start, then reg + reg_delta for every reg_interval epochs since."""
    if t_sl_start is None or epoch < t_sl_start:
        return 0.0
    return cfg.reg + cfg.reg_delta * ((epoch - t_sl_start) // cfg.reg_interval)
