"""The studio's memory over many runs: the run manager (the studio's, in one process) trains N demo runs
one after another; its resident memory after the first and after the last, for this checkout and, side
by side, for another revision's (the code before a change).

    python benchmarks/bench_studio_memory.py [--runs 20] [--baseline REV]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import gc, json, sys, time
from osp_engine import get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.running.manager import RunManager

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

manager, cfg, after = RunManager(sys.argv[1]), apply_overrides(get_preset("demo"), ["speed_budget_s=0"]), []
for i in range(int(sys.argv[2])):
    run_id = manager.start(cfg)
    while manager.reader(run_id).info()["status"] == "running" or manager.owned(run_id) is not None:
        time.sleep(0.2)
    gc.collect()
    after.append(rss_mb())
print(json.dumps(after))
"""


def measure(code: Path, runs: int) -> list[float]:
    """RSS (MB) of a run manager in a fresh process after each of `runs` demo runs, with `code`'s engine."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, tmp, str(runs)], cwd=code, check=True, text=True,
                             capture_output=True, env={**os.environ, "PYTHONPATH": str(code)}).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--baseline", default=None, metavar="REV", help="also measure git revision REV, side by side")
    args = ap.parse_args()
    trees = [("this checkout", ROOT)]
    if args.baseline:
        base = Path(tempfile.mkdtemp(prefix="osp-baseline-")) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        trees.insert(0, (args.baseline, base))
    try:
        for label, code in trees:
            after = measure(code, args.runs)
            print(f"{label}: {after[0]:.0f} MB after 1 demo run, {after[-1]:.0f} MB after {args.runs} "
                  f"(+{after[-1] - after[0]:.0f} MB, {(after[-1] - after[0]) / max(args.runs - 1, 1):.1f} MB per run)")
    finally:
        if args.baseline:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
