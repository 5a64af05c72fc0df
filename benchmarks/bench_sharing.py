"""Two CPU runs at once against one alone, with each run taking every core (threads=<cores>, what every
run did before threads.py) and with the cores shared (threads=0, the default). Separate processes, as the
studio and a command-line run are. Prints wall seconds and ratios from one invocation.

    python benchmarks/bench_sharing.py [--set epochs=16 --set sl_end=10 ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def runs_at_once(n: int, threads: int, extra: list[str], root: Path) -> float:
    """Wall seconds until `n` demo runs started together have all finished."""
    cmd = [sys.executable, "-m", "osp_engine", "run", "--preset", "demo", "--runs-dir", str(root),
           "--set", f"threads={threads}"] + [a for s in extra for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd + ["--set", f"seed={i}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
             for i in range(n)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a run failed")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alone = runs_at_once(1, 0, args.set, root)
        greedy = runs_at_once(2, cores, args.set, root)
        shared = runs_at_once(2, 0, args.set, root)
    print(f"{cores} cores, demo {' '.join(args.set) or '(as preset)'}")
    print(f"one run alone:                         {alone:7.1f} s")
    print(f"two at once, each takes {cores} threads:     {greedy:7.1f} s  ({greedy / alone:.2f}x one alone)")
    print(f"two at once, cores shared (default):   {shared:7.1f} s  ({shared / alone:.2f}x one alone, "
          f"{greedy / shared:.2f}x faster than each taking every core)")


if __name__ == "__main__":
    main()
