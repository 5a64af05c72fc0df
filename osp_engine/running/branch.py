"""Branches: "what if I had pruned at epoch k?" answered by a run of its own.

A run that keeps checkpoints (`keep_checkpoints=k`) leaves `checkpoints/epoch-NNNN.pt` for every k-th
searched epoch before its prune: the model, the optimiser, the method's state and every random state
right after epoch t was trained and evaluated; and `checkpoints/init.pt`, the untrained network before
epoch 0 (branch point INIT = -1: pruning at initialization, searched on the untrained weights, then the
whole schedule trained pruned). A branch at epoch t starts from that file, prunes with
M_t (the sub-network searched at the start of epoch t) as "Prune now" pressed during epoch t would,
and fine-tunes to the end of the same schedule, in the parent's variant. Its store begins with a copy
of the parent's epochs 0..t, so its curves, its training seconds and its epoch-FLOPs cover the whole
cycle it stands for.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from ..method.config import Config, ConfigError
from ..storage.faults import FULL_ERRNOS, writing
from ..storage.reader import RunReader, list_runs

CHECKPOINTS = "checkpoints"
INIT = -1                      # the branch point before epoch 0: the untrained network


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    name = "init.pt" if epoch == INIT else f"epoch-{epoch:04d}.pt"
    return Path(run_dir) / CHECKPOINTS / name


def epoch_label(epoch: int) -> str:
    """'init' for the branch point before epoch 0, else the epoch's number."""
    return "init" if epoch == INIT else str(epoch)


def parse_epoch(text: str) -> int:
    """epoch_label's inverse: a branch point as typed, 'init' or an epoch's number (ValueError otherwise)."""
    return INIT if text.strip() == "init" else int(text)


def keep_initial(run_dir: Path, checkpoint: dict) -> None:
    """The untrained network's checkpoint (model, method state, random states before epoch 0), written
    once at a new run's start when it keeps checkpoints: the branch point of pruning at initialization."""
    from ..storage.export import atomic_save          # torch: only a run writes checkpoints

    target = checkpoint_path(run_dir, INIT)
    target.parent.mkdir(exist_ok=True)
    atomic_save(checkpoint, target)


def keep_checkpoint(run_dir: Path, epoch: int, every: int) -> None:
    """After checkpoint.pt of a searched, unpruned epoch is saved: keep it as checkpoints/epoch-NNNN.pt
    when `epoch` is one of every `every`-th (a hard link: no second write; a copy where links fail)."""
    if every <= 0 or epoch % every:
        return
    target = checkpoint_path(run_dir, epoch)
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    source = run_dir / "checkpoint.pt"
    with writing(target, source.stat().st_size):
        try:
            os.link(source, target)
        except OSError as e:
            if e.errno in FULL_ERRNOS:
                raise
            shutil.copyfile(source, target)


def branch_epochs(run_dir: str | Path) -> list[int]:
    """The epochs a branch can start from: those whose checkpoint was kept, ascending."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    kept = sorted(int(p.stem.split("-")[1]) for p in folder.glob("epoch-*.pt") if p.stem.split("-")[1].isdigit())
    return ([INIT] if checkpoint_path(run_dir, INIT).is_file() else []) + kept


def checkpoints_bytes(run_dir: str | Path) -> int:
    """Disk use of the kept checkpoints, in bytes."""
    folder = Path(run_dir) / CHECKPOINTS
    return sum(p.stat().st_size for p in folder.glob("*.pt")) if folder.is_dir() else 0


BRANCH_SETTINGS = ("distill", "distill_temperature", "teacher", "teacher_device", "teacher_precision")   # a branch may change


def branch_config(parent: RunReader, epoch: int, changes: dict | None = None) -> Config:
    """The parent's config, marked as its branch at `epoch`, with `changes` to the fine-tuning's settings
    (BRANCH_SETTINGS: a branch with distillation beside one without); ConfigError when no branch can start
    there or a change is to another setting."""
    other = sorted(set(changes or {}) - set(BRANCH_SETTINGS))
    if other:
        raise ConfigError(f"a branch keeps its parent's recipe: {', '.join(other)} cannot change "
                          f"(a branch may set {', '.join(BRANCH_SETTINGS)})")
    info = parent.info()
    if info["config"].get("parent"):
        raise ConfigError(f"{parent.run_id} is itself a branch (pruned at epoch {info['config']['branch_epoch']}): "
                          f"branch its parent {info['config']['parent']} instead")
    kept = branch_epochs(parent.dir)
    if epoch not in kept:
        hint = f"kept: {_ranges(kept)}" if kept else "it kept none: start it with --set keep_checkpoints=1"
        what = "the untrained network" if epoch == INIT else f"epoch {epoch}"
        raise ConfigError(f"{parent.run_id} has no checkpoint of {what} to branch from ({hint})")
    cfg = Config.from_json(json.dumps(info["config"]))
    return dataclasses.replace(cfg, parent=parent.run_id, branch_epoch=epoch, keep_checkpoints=0, sweep="", pause_at="",
                               **(changes or {}))


def branches_of(root: str | Path, parent_id: str) -> list[RunReader]:
    """The readable branches of `parent_id` under root, by prune epoch."""
    found = []
    for r in list_runs(root):
        if r.problem() is None and r.info()["config"].get("parent") == parent_id:
            found.append(r)
    return sorted(found, key=lambda r: r.info()["config"]["branch_epoch"])


def sweep_epochs(kept: list[int], every: int | None = None, epochs: list[int] | None = None,
                 first: int | None = None, last: int | None = None) -> list[int]:
    """The sweep's prune epochs: an explicit list (each must be kept), or every `every`-th kept epoch
    from `first` (t_sl_start) to `last` (sl_end). ConfigError names the epochs that can be used."""
    if epochs:
        missing = [e for e in epochs if e not in kept]
        if missing:
            raise ConfigError(f"no checkpoint of epoch(s) {missing}: the run kept {_ranges(kept) or 'none'}")
        return sorted(set(epochs))
    every = every or 1
    if every < 1:
        raise ConfigError(f"--every must be >= 1, got {every}")
    window = [e for e in kept if (first is None or e >= first) and (last is None or e <= last)]
    chosen = window[::every]
    if not chosen:
        raise ConfigError(f"no kept checkpoint between epochs {first} and {last} (kept: {_ranges(kept) or 'none'})")
    return chosen


def _ranges(xs: list[int]) -> str:
    """[-1, 1, 2, 3, 7] -> 'init, 1-3, 7'."""
    out = ["init"] if INIT in xs else []
    xs, i = [x for x in xs if x != INIT], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ", ".join(out)
