"""What pruning earlier or later gives, measured: the lesson's sweep over prune epochs, over seeds.

For each seed, a run of the preset (its own prune at the stable epoch t*) keeps every searched epoch's
checkpoint and that of the untrained network; a branch then prunes it at each of those epochs ("init":
at initialization) and fine-tunes. Two budgets:
- schedule: every branch trains to the end of the preset's schedule (the studio's branches): an
  earlier prune also leaves more epochs to fine-tune;
- fixed: every branch fine-tunes exactly `--finetune` epochs after its prune, on a schedule of
  e + 1 + F epochs (the milestones move with it).
Printed per prune epoch: final accuracy per seed, mean and spread (max - min), and the training cost in
dense-epoch FLOPs (24 dense epochs = 24.0; schedule budget). A prune epoch whose mean differs from
another's by more than twice the larger spread is marked.

    python benchmarks/bench_lesson.py [--preset demo] [--set dataset=digits-noisy --set target=0.9]
        [--seeds 0,1,2] [--epochs init,1,3,5,...] [--finetune 12] [--out lesson.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine.interfaces.presets import get_preset  # noqa: E402
from osp_engine.method.config import Config, apply_overrides  # noqa: E402
from osp_engine.running.branch import branch_config, branch_epochs, checkpoint_path, epoch_label, parse_epoch  # noqa: E402
from osp_engine.running.origin import Branch  # noqa: E402
from osp_engine.running.run import Run  # noqa: E402
from osp_engine.storage.reader import RunReader  # noqa: E402
from osp_engine.storage.sweep import training_cost  # noqa: E402


def final(reader: RunReader) -> tuple[float, float]:
    """(final validation accuracy %, training cost in dense epochs) of a finished run."""
    rows = reader.epochs()
    return rows[-1]["val_acc"], training_cost(rows)["dense_epochs"]


def fixed_budget(parent: Path, epoch: int, finetune: int, root: Path) -> Run:
    """A branch of `parent` at `epoch` that fine-tunes exactly `finetune` epochs after its prune."""
    import torch

    cfg = branch_config(RunReader(parent), epoch)
    epochs = epoch + 1 + finetune
    sl_end = min(cfg.sl_end, epochs - 3)          # the branch prunes at once: the shrink window is moot
    cfg = dataclasses.replace(cfg, epochs=epochs, sl_end=sl_end, sl_start=min(cfg.sl_start, sl_end),
                              preset=f"fixed-{epoch_label(epoch)}")
    run = Run(cfg, root)
    run.origin = Branch(parent, epoch, torch.load(checkpoint_path(parent, epoch), map_location="cpu",
                                                  weights_only=True))
    return run


def measure(cfg: Config, seeds: list[int], epochs: list[int] | None, finetune: int, root: Path) -> dict:
    results: dict = {"schedule": {}, "fixed": {}, "t_star": {}}
    for seed in seeds:
        parent = Run(dataclasses.replace(cfg, seed=seed, keep_checkpoints=1, candidate_every=0), root)
        assert parent.execute() == "finished", parent.error
        info = RunReader(parent.dir).info()
        results["t_star"][seed] = info["t_star"]
        results["schedule"].setdefault("t*", {})[seed] = final(RunReader(parent.dir))
        for epoch in epochs or branch_epochs(parent.dir):
            if epoch not in branch_epochs(parent.dir):
                continue
            branch = Run.branch(parent.dir, epoch, root)
            assert branch.execute() == "finished", branch.error
            results["schedule"].setdefault(epoch_label(epoch), {})[seed] = final(RunReader(branch.dir))
            if finetune > 0:
                run = fixed_budget(parent.dir, epoch, finetune, root)
                assert run.execute() == "finished", run.error
                results["fixed"].setdefault(epoch_label(epoch), {})[seed] = final(RunReader(run.dir))
            print(f"seed {seed} epoch {epoch_label(epoch)}: schedule {results['schedule'][epoch_label(epoch)][seed][0]:.2f} %"
                  + (f", fixed {results['fixed'][epoch_label(epoch)][seed][0]:.2f} %" if finetune > 0 else ""), flush=True)
    return results


def table(by_epoch: dict, title: str) -> None:
    print(f"\n{title}")
    print(f"{'prune at':>9} | {'accuracy per seed (%)':<26} | {'mean':>6} | {'spread':>6} | dense-epoch FLOPs")
    stats = {}
    for label, per_seed in by_epoch.items():
        accs = np.array([a for a, _ in per_seed.values()])
        cost = np.mean([c for _, c in per_seed.values()])
        stats[label] = (accs.mean(), np.ptp(accs) if len(accs) > 1 else 0.0, len(accs))
        print(f"{label:>9} | {', '.join(f'{a:.2f}' for a in accs):<26} | {accs.mean():6.2f} | {stats[label][1]:6.2f} | {cost:.1f}")
    full = [k for k, v in stats.items() if v[2] == max(s[2] for s in stats.values())]
    pairs = [(a, b, abs(stats[a][0] - stats[b][0]), 2 * max(stats[a][1], stats[b][1]))
             for i, a in enumerate(full) for b in full[i + 1:]]
    beyond = [p for p in pairs if p[2] > p[3]]
    best = max(pairs, key=lambda p: p[2] - p[3]) if pairs else None
    if beyond:
        for a, b, d, s in sorted(beyond, key=lambda p: p[3] - p[2])[:6]:
            print(f"  {a} vs {b}: means differ by {d:.2f} pp > twice the larger spread ({s:.2f} pp)")
    elif best:
        print(f"  no two prune epochs differ beyond twice their spread (closest: {best[0]} vs {best[1]}, "
              f"{best[2]:.2f} pp against {best[3]:.2f} pp)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", default="", help="prune epochs to branch at, e.g. init,1,3,5 (default: every kept one)")
    ap.add_argument("--finetune", type=int, default=12, help="the fixed budget's fine-tuning epochs (0: skip it)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cfg = apply_overrides(get_preset(args.preset), args.set)
    cfg = dataclasses.replace(cfg, pause_at="", speed_budget_s=0.0).validate()
    epochs = [parse_epoch(e) for e in args.epochs.split(",") if e.strip()] or None
    with tempfile.TemporaryDirectory() as root:
        results = measure(cfg, [int(s) for s in args.seeds.split(",")], epochs, args.finetune, Path(root))
    print(f"\n{cfg.dataset}, {cfg.model}, target {cfg.target}, {cfg.epochs} epochs; t* per seed: {results['t_star']}")
    table(results["schedule"], f"budget: the schedule ({cfg.epochs} epochs for every branch)")
    if args.finetune > 0:
        table(results["fixed"], f"budget: fixed ({args.finetune} fine-tuning epochs after every prune)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
