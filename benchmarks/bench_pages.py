"""Server-side render time of every studio page for a finished 300-epoch run of a CIFAR ResNet.

The store is SIMULATED: the groups (names, sizes, layers) are the real ones of the chosen network,
but the per-epoch metrics, masks and saliency come from a seeded settling process, not from
training (300 CIFAR epochs cannot run here). Masks and saliency are written for every epoch up to
t* = 270, later than a real run prunes, so the matrices are close to their largest. The page code
that is timed is the real one: each page's render() runs in Streamlit's AppTest as app.py's
navigation calls it (reading the store, computing, building the figures); nothing goes to a browser.

Every page is rendered once first, so module imports (a one-time cost of the server process) are
not counted. Then per page: 'cold' clears st.cache_data (the first visit to this run); 'warm' is the
median of the next renders (every later visit, and every 2 s fragment refresh). 'floor' is AppTest's
own cost for a one-line page, included in every figure.

    python benchmarks/bench_pages.py [--model resnet110] [--epochs 300] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from osp_engine.method.config import Config  # noqa: E402
from osp_engine.method.graph import build_graph  # noqa: E402
from osp_engine.method.groups import build_groups, find_classifier  # noqa: E402
from osp_engine.models import build_model  # noqa: E402
from osp_engine.storage.reader import RunReader  # noqa: E402
from osp_engine.storage.store import RunStore  # noqa: E402

PAGES = ["runs", "stability", "channels", "tradeoff", "compare"]
BUDGET_MS = 300.0


def real_groups(model: str) -> list[tuple[str, int, list[str]]]:
    net = build_model(model, 10, 32, 3)
    example = torch.zeros(1, 3, 32, 32)
    groups = build_groups(net, build_graph(net, example), find_classifier(net, 10))
    return [(g.name, g.size, g.layers) for g in groups]


def simulated_store(root: Path, model: str, epochs: int, t_star: int, sl_start: int = 30) -> str:
    """Write a finished run: masks converge on a final candidate while its marked saliency decays."""
    rng = np.random.default_rng(0)
    groups = real_groups(model)
    sizes = np.array([s for _, s, _ in groups])
    n = int(sizes.sum())
    final = rng.random(n) > 0.5                                   # (N,) the candidate at t*
    base = rng.lognormal(-4.0, 0.6, n)                            # (N,) group saliency before the regulariser
    dense_flops, dense_params = 253e6, 1.73e6
    cfg = Config(preset="bench", model=model, dataset="cifar10", epochs=epochs, sl_start=sl_start)
    run_id = "bench-simulated"
    store = RunStore.create(root / run_id, run_id, cfg.to_json(), {"torch": torch.__version__}, "cpu",
                            cfg.threshold, "cifar10 (simulated)")
    store.write_groups(groups)
    kept = rng.random(n) > 0.5
    for epoch in range(epochs):
        searched = epoch <= t_star
        phase = "pruned" if epoch > t_star else ("sparsity" if epoch >= sl_start else "dense")
        flip = rng.random(n) < 0.4 * np.exp(-epoch / 40)          # candidates change less and less
        kept = np.where(flip, ~kept, kept)
        kept = np.where(rng.random(n) < 0.05, final, kept)        # and drift toward the final one
        decay = np.exp(-max(0, epoch - sl_start) / 25) if epoch >= sl_start else 1.0
        sal = base * np.where(final, 1.0, decay)
        psi = float(1 - 0.5 * np.exp(-epoch / 60))
        acc = 60 + 33 * (1 - np.exp(-epoch / 30))
        model_flops = dense_flops * (0.5 if epoch > t_star else 1.0)
        row = dict(epoch=epoch, phase=phase, train_loss=1 / (epoch + 1), train_acc=acc + 3, val_loss=1 / (epoch + 2),
                   val_acc=acc, lr=0.1, reg=1e-4 * max(0, epoch - sl_start) if phase == "sparsity" else 0.0,
                   psi_raw=psi if searched else None, psi_smoothed=psi if searched else None,
                   eb_distance=float(np.exp(-epoch / 50)) if searched else None,
                   cand_flops=dense_flops / 2 if searched else None, cand_params=dense_params / 2 if searched else None,
                   cand_reduction=0.5 if searched else None, model_flops=model_flops,
                   model_params=dense_params * (0.4 if epoch > t_star else 1.0),
                   dense_flops=dense_flops, dense_params=dense_params, epoch_seconds=20.0)
        bounds = np.cumsum(np.r_[0, sizes])
        split = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        store.write_epoch(row, [kept[s] for s in split] if searched else None,
                          [sal[s] for s in split] if searched else None)
    store.update_run(status="finished", phase="pruned", t_star=t_star, prune_reason="stable",
                     t_sl_start=sl_start, ended=time.time())
    store.close()
    return run_id


def render_ms(source: str, run_id: str) -> float:
    """Wall time of one AppTest run of the script `source` with `run_id` picked in the sidebar."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_string(source, default_timeout=120)
    at.session_state["run_id"] = run_id
    t0 = time.perf_counter()
    at.run()
    ms = 1000 * (time.perf_counter() - t0)
    if at.exception:
        raise RuntimeError(f"{source!r}: {at.exception[0].message}")
    return ms


def page(name: str) -> str:
    """The script app.py's navigation runs for a page: its render function."""
    return f"from osp_studio.{name} import render\nrender()\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet110", help="resnet56 (1,120 channels) or resnet110 (2,128)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import logging

    import streamlit as st

    for name in ("streamlit.runtime.scriptrunner_utils.script_run_context", "streamlit.runtime.caching.cache_data_api"):
        logging.getLogger(name).disabled = True                   # AppTest's bare-mode warnings, per render

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OSP_RUNS_DIR"] = tmp
        os.chdir(ROOT)
        t0 = time.perf_counter()
        run_id = simulated_store(Path(tmp), args.model, args.epochs, t_star=min(270, args.epochs - 1))
        channels = sum(g["size"] for g in RunReader(Path(tmp) / run_id).groups())
        size_mb = (Path(tmp) / run_id / "run.db").stat().st_size / 1e6
        print(f"simulated store: {args.model}, {channels} channels, {args.epochs} epochs, {size_mb:.1f} MB, "
              f"written in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        for name in PAGES:                                         # imports, once per server process
            render_ms(page(name), run_id)
        print(f"first pass over all pages (imports included): {1000 * (time.perf_counter() - t0):.0f} ms")
        floor = statistics.median(render_ms("import streamlit as st\nst.title('floor')\n", run_id)
                                  for _ in range(args.repeat))
        print(f"AppTest floor (one-line page): {floor:.0f} ms, included below")
        print(f"{'page':<10} {'cold ms':>8} {'warm ms':>8}  budget {BUDGET_MS:.0f} ms")
        worst = 0.0
        for name in PAGES:
            st.cache_data.clear()
            cold = render_ms(page(name), run_id)
            warm = statistics.median(render_ms(page(name), run_id) for _ in range(args.repeat))
            worst = max(worst, cold, warm)
            print(f"{name:<10} {cold:8.0f} {warm:8.0f}  {'ok' if max(cold, warm) <= BUDGET_MS else 'OVER'}")
        print(f"slowest render {worst:.0f} ms = {worst / BUDGET_MS:.2f} x the budget")


if __name__ == "__main__":
    main()
