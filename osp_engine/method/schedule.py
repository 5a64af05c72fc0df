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


def _official_reg_steps(epoch: int, t_sl_start: int, interval: int) -> int:
    """official (main_cifar.py:92-93): +1 at the start of every shrinking epoch e with e % interval == 0."""
    return epoch // interval - (t_sl_start - 1) // interval


def _corrected_reg_steps(epoch: int, t_sl_start: int, interval: int) -> int:
    """corrected: +1 for every full reg_interval epochs since t_sl_start."""
    return (epoch - t_sl_start) // interval


REG_STEPS = {"official": _official_reg_steps, "corrected": _corrected_reg_steps}


def reg_strength(cfg: Config, epoch: int, t_sl_start: int | None) -> float:
    """reg during `epoch`: 0 before t_sl_start, then reg + reg_delta * (growth steps so far).

    official: with reg_interval 1 the first shrinking epoch already trains with reg + reg_delta, and
    the steps fall on epochs divisible by reg_interval; corrected: reg at t_sl_start, + reg_delta
    every reg_interval epochs after it.
    """
    if t_sl_start is None or epoch < t_sl_start:
        return 0.0
    return cfg.reg + cfg.reg_delta * REG_STEPS[cfg.variant](epoch, t_sl_start, cfg.reg_interval)


# official (main_cifar.py:107-112): optimizer.step(), scheduler.step(), THEN the shrink reads the LR,
# so it uses the next iteration's LR; corrected: the LR of the step just taken.
SHRINK_LR_AHEAD = {"official": 1, "corrected": 0}

# official (main_cifar.py:382-392): after the prune the new scheduler is stepped t* epochs' worth and
# training resumes at t*+1, so every fine-tuning epoch trains one epoch behind; corrected: on time.
FINE_TUNE_LAG = {"official": 1, "corrected": 0}


def schedule_epoch(cfg: Config, epoch: int, pruned: bool) -> int:
    """The schedule position (in epochs) at which training epoch `epoch` takes its learning rate."""
    return epoch - FINE_TUNE_LAG[cfg.variant] if pruned else epoch


def shrink_lr(cfg: Config, position: int, it: int, iters_per_epoch: int) -> float:
    """The LR in the shrink factor (1 - reg * lr) after iteration `it` at schedule position `position`."""
    return learning_rate(cfg, position, it + SHRINK_LR_AHEAD[cfg.variant], iters_per_epoch)
