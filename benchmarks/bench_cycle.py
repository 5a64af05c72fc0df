"""A whole cycle's time by phase: cifar10-resnet56 on the SYNTHETIC CIFAR-shaped set (no CIFAR needed).

Prints the median epoch seconds of the dense, regularised (sparsity) and pruned phases, the pruned/dense
epoch ratio, the regulariser's overhead per step (the shrink alone, and a training step with and without
it, side by side), and the cycle's wall time. The paper's schedule is 300 epochs; on CPU use fewer.

    python benchmarks/bench_cycle.py [--epochs 300] [--device cuda] [--synthetic-size 50000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine import get_preset  # noqa: E402
from osp_engine.method.config import apply_overrides  # noqa: E402
from osp_engine.running.run import Run  # noqa: E402
from osp_engine.storage.reader import RunReader  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--synthetic-size", type=int, default=50000)
    args = ap.parse_args()
    scale = args.epochs / 300                              # the preset's epochs of the schedule, scaled
    settings = ["dataset=synthetic-cifar10", f"synthetic_size={args.synthetic_size}", f"epochs={args.epochs}",
                f"sl_start={max(0, round(30 * scale))}", f"sl_end={max(1, round(120 * scale))}",
                f"device={args.device}", "keep_checkpoints=0"]
    cfg = apply_overrides(get_preset("cifar10-resnet56"), settings).validate()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = Run(cfg, tmp)
        status = run.execute(log=lambda line: print(line, flush=True))
        wall = time.perf_counter() - t0
        assert status == "finished", run.error
        reader = RunReader(run.dir)
        rows, s = reader.epochs(), reader.summary()
    by_phase = {}
    for r in rows[1:]:                                     # epoch 0 carries one-time start-up costs
        by_phase.setdefault(r["phase"], []).append(r["epoch_seconds"] - (r["cand_seconds"] or 0.0))
    print(f"cifar10-resnet56, synthetic {args.synthetic_size} images, {args.epochs} epochs on {s['device']}: "
          f"t* = {s['t_star']} ({s['prune_reason']}), FLOPs -{100 * (s['flops_reduction'] or 0):.1f} %")
    for phase, secs in by_phase.items():
        print(f"  {phase:<9} median epoch {statistics.median(secs):8.2f} s over {len(secs)} epochs")
    if "dense" in by_phase and "pruned" in by_phase:
        print(f"  pruned/dense epoch ratio {statistics.median(by_phase['pruned']) / statistics.median(by_phase['dense']):.3f}")
    if "dense" in by_phase and "sparsity" in by_phase:
        print(f"  sparsity/dense epoch ratio {statistics.median(by_phase['sparsity']) / statistics.median(by_phase['dense']):.3f}"
              " (the regulariser's overhead per epoch)")
    print(f"  whole cycle: {wall:.1f} s wall")


if __name__ == "__main__":
    main()
