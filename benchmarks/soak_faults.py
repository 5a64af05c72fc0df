"""Fault soak: demo-sized runs, branches and sweeps killed at random points, the disk filled at random
moments, each resumed until it finishes, then compared with an uninterrupted run of the same seed.

    python benchmarks/soak_faults.py [--kills 100] [--jobs 2] [--seed 0] [--disk-mb 64]

A unit is a run (seed 0 or 1), a branch of the seed-0 reference at a kept epoch, or a sweep (the
`sweep` command over a copy of that reference, two prune epochs). Every attempt, the first and each
resume, is a command-line process with one PyTorch thread, wrapped so that with some probability it
signals itself (SIGKILL, SIGTERM or SIGINT) at a random occurrence of a random point: between two
training batches, the start of a search, the prune's commit, halfway through writing a checkpoint,
the export, a branch's history copy, or after a random time. Where this process may mount a tmpfs,
the runs live on one of --disk-mb MB and a filler file takes all but 150 kB of it at a random moment;
the filler goes once the run has stopped. A stopped unit is resumed (`resume`; a branch killed before
its first checkpoint is started again; a sweep is run again, after resuming its stopped branch).
Finished stores (epochs, masks, saliency, run row; not wall times) and exported weights are compared
with the uninterrupted reference. Prints kills, disk fills, resumes, identical, differing.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from osp_engine.storage.reader import reproducible_content  # noqa: E402
SETTINGS = ["--set", "epochs=9", "--set", "sl_start=1", "--set", "sl_end=6", "--set", "reg=0.02",
            "--set", "reg_delta=0.02", "--set", "threads=1"]
POINTS = ["time", "train", "search", "prune", "checkpoint", "export", "branch-copy"]
SIGNALS = ["SIGKILL", "SIGTERM", "SIGINT"]

WRAPPER = '''
import os, signal, sys, threading, time
sys.path.insert(0, {root!r})
import osp_engine.running.run as run_module, osp_engine.running.pruner as pruner_module, osp_engine.storage.store as store_module
from osp_engine.interfaces import cli

point, nth, sig = {point!r}, {nth!r}, getattr(signal, {sig!r})
seen = [0]
def hit():
    seen[0] += 1
    if seen[0] == nth:
        print("soak: signal", {sig!r}, "at", point, nth, file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)
def wrap(owner, name, before=True, half_file=False):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        if half_file and seen[0] + 1 == nth:
            with open(str(args[1]) + ".tmp", "wb") as f:
                f.write(b"half a checkpoint")
        hit()
        return original(*args, **kwargs)
    setattr(owner, name, wrapped)
if point == "time":                     # nth tenths of a second after the start
    delay, nth = nth / 10, 1
    threading.Thread(target=lambda: (time.sleep(delay), hit()), daemon=True).start()
elif point == "train":
    wrap(run_module.Run, "_between_batches")
elif point == "search":
    wrap(pruner_module.Pruner, "begin_epoch")
elif point == "prune":
    wrap(pruner_module.Pruner, "record_prune")
elif point == "checkpoint":
    wrap(run_module, "atomic_save", half_file=True)
elif point == "export":
    wrap(pruner_module, "export_model")
elif point == "branch-copy":
    wrap(store_module.RunStore, "copy_history")
sys.exit(cli.main(sys.argv[1:]))
'''
RANGES = {"time": (5, 80), "train": (1, 200), "search": (1, 9), "prune": (1, 1), "checkpoint": (1, 9),
          "export": (1, 1), "branch-copy": (1, 1)}


def same_model(a: Path, b: Path) -> bool:
    import torch
    x = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    y = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


class Soak:
    def __init__(self, work: Path, disk: Path | None, rng: random.Random, kills_wanted: int) -> None:
        self.work, self.disk, self.rng, self.kills_wanted = work, disk, rng, kills_wanted
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.points: Counter = Counter()
        self.disk_busy = threading.Lock()          # one filler at a time: it fills the disk every unit shares

    def osp(self, args: list[str], fault: bool) -> subprocess.CompletedProcess:
        """One command-line process, signalling itself at a random point when `fault` and kills are wanted."""
        cmd = [sys.executable, "-m", "osp_engine", *args]
        with self.lock:
            fault = fault and self.counts["kills"] < self.kills_wanted and self.rng.random() < 0.8
            point, sig = self.rng.choice(POINTS), self.rng.choice(SIGNALS)
            nth = self.rng.randint(*RANGES[point])
        if fault:
            script = self.work / f"wrap-{threading.get_ident()}.py"
            script.write_text(WRAPPER.format(root=str(ROOT), point=point, nth=nth, sig=sig))
            cmd = [sys.executable, str(script), *args]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if "soak: signal" in res.stderr:
            with self.lock:
                self.counts["kills"] += 1
                self.counts[sig] += 1
                self.points[point] += 1
        return res

    def fill_disk_later(self, stop: threading.Event) -> None:
        """At a random moment while a process runs, take all but 150 kB of the disk; freed once `stop` is set."""
        if self.disk is None or self.rng.random() > 0.15 or not self.disk_busy.acquire(blocking=False):
            return
        def fill():
            try:
                if stop.wait(self.rng.uniform(1.0, 6.0)):
                    return
                free = shutil.disk_usage(self.disk).free
                (self.disk / "filler").write_bytes(b"\0" * max(0, free - 150_000))
                with self.lock:
                    self.counts["disk fills"] += 1
                stop.wait()
            finally:
                (self.disk / "filler").unlink(missing_ok=True)
                self.disk_busy.release()
        threading.Thread(target=fill, daemon=True).start()

    def attempt(self, args: list[str]) -> subprocess.CompletedProcess:
        stop = threading.Event()
        self.fill_disk_later(stop)
        try:
            return self.osp(args, fault=True)
        finally:
            stop.set()

    def finish(self, run_dir: Path) -> None:
        """Resume `run_dir` until it has exported its model."""
        res = None
        for _ in range(50):
            if finished(run_dir):
                return
            res = self.attempt(["resume", str(run_dir)])
            with self.lock:
                self.counts["resumes"] += 1
            if res.returncode == 2 and "is being written" in res.stderr:
                time.sleep(0.5)
        raise RuntimeError(f"{run_dir} did not finish after 50 resumes; the last said: {res.stderr[-600:]}")


def finished(run_dir: Path) -> bool:
    """Whether the run recorded its end as finished (its model.pt alone is not enough: a process killed
    after the export and before that record leaves a run to resume)."""
    try:
        con = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return con.execute("SELECT status FROM run").fetchone()[0] == "finished"
    except sqlite3.Error:
        return False
    finally:
        con.close()


def new_dirs(folder: Path, before: set) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in before)


def unit_run(soak: Soak, refs: dict, seed: int, runs: Path) -> list[tuple[Path, Path]]:
    runs.mkdir(parents=True)
    while True:
        soak.attempt(["run", "--runs-dir", str(runs), *SETTINGS, "--set", f"seed={seed}"])
        made = new_dirs(runs, set())
        if made and any((made[0] / name).exists() for name in ("checkpoint.pt", "model.pt")):
            break
        with soak.lock:
            soak.counts["started again"] += 1            # stopped before its first checkpoint: nothing to resume
        for half in made:
            shutil.rmtree(half)
    soak.finish(made[0])
    return [(made[0], refs[("run", seed)])]


def unit_branch(soak: Soak, refs: dict, epoch: int, runs: Path) -> list[tuple[Path, Path]]:
    parent = _copy_parent(soak, refs, runs)
    while True:
        before = {p.name for p in runs.iterdir()}
        soak.attempt(["branch", str(parent), "--epoch", str(epoch)])
        made = new_dirs(runs, before)
        if made and any((made[0] / name).exists() for name in ("checkpoint.pt", "model.pt")):
            break
        with soak.lock:
            soak.counts["started again"] += 1           # stopped before its first checkpoint
        for half in made:
            shutil.rmtree(half)
    soak.finish(made[0])
    return [(made[0], refs[("branch", epoch)])]


def unit_sweep(soak: Soak, refs: dict, epochs: list[int], runs: Path) -> list[tuple[Path, Path]]:
    parent = _copy_parent(soak, refs, runs)
    for _ in range(50):
        res = soak.attempt(["sweep", str(parent), "--epochs", ",".join(map(str, epochs))])
        for b in new_dirs(runs, {parent.name}):
            if not finished(b):
                if (b / "checkpoint.pt").exists():
                    soak.finish(b)
                else:
                    shutil.rmtree(b)
                    with soak.lock:
                        soak.counts["started again"] += 1
        if res.returncode == 0:
            break
    from osp_engine.storage.reader import RunReader

    return [(b, refs[("branch", RunReader(b).info()["config"]["branch_epoch"])]) for b in new_dirs(runs, {parent.name})]


def compared(unit, soak: Soak, refs: dict, arg, runs: Path) -> list[str]:
    """Run a unit, compare each of its finished runs with its reference, then remove its folder (the
    soak's disk holds a few units at a time). 'identical', or what differed or failed."""
    try:
        pairs = unit(soak, refs, arg, runs)
        out = []
        for a, b in pairs:
            ours, theirs = reproducible_content(a), reproducible_content(b)
            same_weights = same_model(a, b)
            differ = [f"{key} (first at {next(i for i, (x, y) in enumerate(zip(ours[key] + [None], theirs[key] + [None])) if x != y)}: "
                      f"{_first_diff(ours[key], theirs[key])})" for key in ours if ours[key] != theirs[key]]
            out.append("identical" if not differ and same_weights else
                       f"{a.name}: store {'; '.join(differ) or 'same'}; model {'same' if same_weights else 'differs'}; "
                       f"events {[e for e in _kinds(a)]}")
        return out
    except Exception as e:
        return [f"{runs.name} ({unit.__name__}) did not finish: {type(e).__name__}: {str(e)[-400:]}"]
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def _first_diff(ours: list, theirs: list) -> str:
    for x, y in zip(ours, theirs):
        if x != y:
            return f"{str(x)[:160]} vs {str(y)[:160]}"
    return f"{len(ours)} rows vs {len(theirs)}"


def _kinds(run_dir: Path) -> list[str]:
    con = sqlite3.connect(run_dir / "run.db")
    try:
        return [f"{k}@{e}" for k, e in con.execute("SELECT kind, epoch FROM events ORDER BY id")]
    finally:
        con.close()


def _copy_parent(soak: Soak, refs: dict, runs: Path) -> Path:
    runs.mkdir(parents=True)
    source = refs[("run", 0)]
    target = runs / source.name
    with soak.disk_busy:                     # never while a filler takes the disk
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("writer.lock"))
    return target


def references(soak: Soak, refs_dir: Path, epochs: list[int]) -> dict:
    refs = {}
    for seed in (0, 1):
        folder = refs_dir / f"seed{seed}"
        soak.osp(["run", "--runs-dir", str(folder), *SETTINGS, "--set", f"seed={seed}"], fault=False)
        (refs[("run", seed)],) = new_dirs(folder, set())
    for e in epochs:
        folder = refs_dir / f"branch{e}"
        parent = _copy_parent(soak, refs, folder)
        soak.osp(["branch", str(parent), "--epoch", str(e)], fault=False)
        (refs[("branch", e)],) = new_dirs(folder, {parent.name})
    return refs


def mount_disk(folder: Path, mb: int) -> Path | None:
    folder.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(folder)], capture_output=True)
    return folder if res.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--disk-mb", type=int, default=64)
    ap.add_argument("--units", default="run,branch,sweep", help="the kinds of unit to draw from")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    epochs = [2, 4]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        disk = mount_disk(work / "disk", args.disk_mb)
        print("runs on a tmpfs of", args.disk_mb, "MB (disk fills on)" if disk else
              "the temporary folder: no tmpfs could be mounted, so no disk fills", flush=True)
        try:
            soak = Soak(work, disk, rng, args.kills)
            t0 = time.time()
            refs = references(soak, work / "refs", epochs)
            verdicts, n = [], 0
            with ThreadPoolExecutor(args.jobs) as pool:
                while soak.counts["kills"] < args.kills:
                    kinds = [k for k in [(unit_run, rng.choice([0, 1])), (unit_branch, rng.choice(epochs)),
                                         (unit_sweep, epochs)] if k[0].__name__[5:] in args.units.split(",")]
                    jobs = []
                    for _ in range(args.jobs):
                        fn, arg = rng.choice(kinds)
                        n += 1
                        jobs.append(pool.submit(compared, fn, soak, refs, arg, (disk or work) / f"unit{n}"))
                    for job in jobs:
                        verdicts += job.result()
                    print(f"{n} units, {soak.counts['kills']} kills, {time.time() - t0:.0f} s", flush=True)
            same = verdicts.count("identical")
            for v in verdicts:
                if v != "identical":
                    print("not identical:", v)
            results = verdicts
            c = soak.counts
            print(f"kills: {c['kills']} (SIGKILL {c['SIGKILL']}, SIGTERM {c['SIGTERM']}, SIGINT {c['SIGINT']}; "
                  + ", ".join(f"{p} {soak.points[p]}" for p in POINTS) + ")")
            print(f"disk fills: {c['disk fills']}; resumes: {c['resumes']}; started again (stopped before a first checkpoint): "
                  f"{c['started again']}")
            print(f"finished runs compared: {len(results)}; identical: {same}; differing: {len(results) - same}; "
                  f"{time.time() - t0:.0f} s")
        finally:
            if disk is not None:
                subprocess.run(["umount", "-l", str(disk)], check=False)


if __name__ == "__main__":
    main()
