"""What measuring the candidate's own accuracy costs, side by side in one invocation.

For each network, the same run per repeat with candidate_every=1 (the default: every searched epoch's
candidate is copied, pruned physically and evaluated), the preset's own value, and 0 (never).
Printed: from the store, the candidate's seconds as a share of the searched epochs' other work
(search, training, evaluation), epochs 1 to t*, and the run's wall seconds against a run that never
evaluates it. The demo preset thins it to every other epoch (candidate_every=2); both are measured.

    python benchmarks/bench_candidate.py [--repeat 2] [--skip-resnet56]

ResNet-56 trains on the SYNTHETIC CIFAR-shaped set (no CIFAR offline): 2,000 training images and 200
validation images. CIFAR-10 validates on 10,000 images for 50,000 trained (1:5, here 1:10), so its
evaluation part weighs about twice as much; the line for it says so.
"""
from __future__ import annotations

import argparse
import dataclasses
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

CASES = {
    "demo (digits-resnet8)": (get_preset("demo"), []),
    "resnet56 (synthetic CIFAR, 2,000 images)": (get_preset("cifar10-resnet56"),
                                                 ["dataset=synthetic-cifar10", "synthetic_size=2000", "epochs=6",
                                                  "sl_start=0", "sl_end=3", "device=cpu", "keep_checkpoints=0"]),
}


def one(cfg, root: Path) -> tuple[float, float]:
    """(wall seconds, candidate seconds / the rest of the searched epochs' seconds, epochs 1 to t*)."""
    t0 = time.perf_counter()
    run = Run(cfg, root)
    assert run.execute() == "finished", run.error
    wall = time.perf_counter() - t0
    rows = [r for r in RunReader(run.dir).epochs() if r["psi_raw"] is not None or r["cand_seconds"]]
    cand = sum(r["cand_seconds"] or 0.0 for r in rows)
    return wall, cand / (sum(r["epoch_seconds"] for r in rows) - cand)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-resnet56", action="store_true")
    ap.add_argument("--only-resnet56", action="store_true")
    args = ap.parse_args()
    for name, (preset, settings) in CASES.items():
        if args.skip_resnet56 and "resnet56" in name or args.only_resnet56 and "resnet56" not in name:
            continue
        base = apply_overrides(preset, settings).validate()
        modes = sorted({1, base.candidate_every}) + [0]          # every epoch, the preset's own, never
        walls: dict[int, list[float]] = {m: [] for m in modes}
        shares: dict[int, list[float]] = {m: [] for m in modes}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                for every in modes:
                    wall, share = one(dataclasses.replace(base, candidate_every=every), Path(tmp))
                    walls[every].append(wall)
                    shares[every].append(share)
        off = statistics.median(walls[0])
        for every in modes[:-1]:
            on = statistics.median(walls[every])
            print(f"{name}, candidate_every={every}{' (the preset)' if every == base.candidate_every else ''}: "
                  f"candidate evaluation = {100 * statistics.median(shares[every]):.1f} % of the searched epochs' "
                  f"other work (runs: {', '.join(f'{100 * x:.1f}' for x in shares[every])} %); whole run "
                  f"{on:.1f} s against {off:.1f} s never evaluating ({on / off:.3f}x)", flush=True)
        if "resnet56" in name:
            print("  (CIFAR-10 validates 1 image per 5 trained, this set 1 per 10: its evaluation part weighs "
                  "about twice as much there)")


if __name__ == "__main__":
    main()
