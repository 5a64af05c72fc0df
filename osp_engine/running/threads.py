"""PyTorch's CPU threads for a run: the machine's cores shared among the CPU runs live on it.

Two runs that each take every core oversubscribe them (OpenMP threads spin while they wait for each
other: a 1.3 s demo epoch took 60 s with two runs on two cores). A CPU run therefore re-reads, at the
start of every epoch, how many CPU runs are live under its runs folder on this machine (its own
included) and takes its share of the cores, never more than the process started with (OMP_NUM_THREADS
or PyTorch's default). `threads=N` in the config fixes N instead.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..storage.reader import list_runs


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                              # macOS, Windows
        return os.cpu_count() or 1


def live_cpu_runs(root: str | Path) -> int:
    """CPU runs under `root` whose writing process is alive on this machine (this one included)."""
    live = 0
    for reader in list_runs(root):
        try:
            info = reader.info()
        except Exception:                               # damaged or deleted while we looked: not a live run
            continue
        if info["display_status"] == "running" and info["device"] == "cpu" and reader.writer_alive():
            live += 1
    return live


def thread_share(explicit: int, ceiling: int, live_runs: int, cores: int) -> int:
    """Threads for one run: `explicit` when > 0, else an equal share of the cores, at least 1 and at
    most `ceiling` (the thread count the process started with)."""
    if explicit > 0:
        return explicit
    return max(1, min(ceiling, cores // max(1, live_runs)))
