"""Distillation from the dense network at the prune (distill = alpha > 0) against the plain fine-tuning:
final accuracy over seeds and the fine-tuning epoch's time, one invocation, runs one after another.

Two recipes: the lesson preset (95 % of the FLOPs removed, pruned at its own t*) and the demo at a
90 % target. For each, every alpha of --alphas (0 is the plain fine-tuning) at --temperature, for each
seed of --seeds. Printed: per recipe and alpha, the final accuracy (mean, and the spread max - min over
the seeds), the dense network's best accuracy before the prune (the gap's top), the share of the gap
between the plain prune and the dense network that alpha closes, and the mean seconds of a fine-tuning
epoch (the epochs after the prune), with its ratio to the plain one.

    python benchmarks/bench_distill.py [--alphas 0,0.5] [--temperature 4] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine import get_preset  # noqa: E402
from osp_engine.method.config import apply_overrides  # noqa: E402
from osp_engine.running.run import Run  # noqa: E402
from osp_engine.storage.reader import RunReader  # noqa: E402

RECIPES = {"lesson": ("lesson", ["pause_at="]),          # 95 % of the FLOPs removed, at its own t*
           "demo-90": ("demo", ["target=0.9"]),
           "demo-50": ("demo", [])}


def one_run(root: Path, preset: str, changes: list[str], alpha: float, temperature: float, seed: int,
            teacher: str) -> dict:
    cfg = apply_overrides(get_preset(preset), changes + [f"distill={alpha}", f"distill_temperature={temperature}",
                                                        f"seed={seed}", "speed_budget_s=0", f"teacher={teacher}"])
    run = Run(cfg, root)
    assert run.execute() == "finished", run.error
    reader = RunReader(run.dir)
    s, rows = reader.summary(), reader.epochs()
    tuning = [r["epoch_seconds"] for r in rows if r["phase"] == "pruned"]
    return {"final": s["final_acc"], "dense": s["best_acc"] if s["t_star"] is None else
            max(r["val_acc"] for r in rows if r["phase"] != "pruned"), "t_star": s["t_star"],
            "epoch_s": statistics.mean(tuning[1:] or tuning)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alphas", default="0,0.5")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--teacher", default="stable", help="stable (the network at the prune) or best (the best dense epoch)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="which recipes, by label, joined by commas")
    args = ap.parse_args()
    alphas, seeds = [float(a) for a in args.alphas.split(",")], [int(s) for s in args.seeds.split(",")]
    print(f"T {args.temperature}; teacher {args.teacher}; seeds {seeds}; accuracy in %, mean (spread: max - min)")
    print("| recipe | alpha | t* | final accuracy | dense best | gap closed | fine-tuning epoch | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.recipes.split(","):
            preset, changes = RECIPES[label]
            plain = None
            for alpha in alphas:
                got = [one_run(Path(tmp), preset, changes, alpha, args.temperature, s, args.teacher) for s in seeds]
                final = [g["final"] for g in got]
                mean, spread = statistics.mean(final), max(final) - min(final)
                dense = statistics.mean(g["dense"] for g in got)
                epoch_s = statistics.mean(g["epoch_s"] for g in got)
                if alpha == 0:
                    plain = (mean, epoch_s)
                closed = "-" if plain is None or alpha == 0 or dense <= plain[0] else \
                    f"{100 * (mean - plain[0]) / (dense - plain[0]):.0f} %"
                ratio = "-" if plain is None or alpha == 0 else f"{epoch_s / plain[1]:.2f}x"
                print(f"| {label} | {alpha:g} | {', '.join(str(g['t_star']) for g in got)} | {mean:.2f} "
                      f"({spread:.2f}) | {dense:.2f} | {closed} | {epoch_s:.3f} s | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
