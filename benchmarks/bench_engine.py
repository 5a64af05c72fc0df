"""Side-by-side timings, printed as ratios from one run (no timed assertions anywhere).

1. Per-epoch sub-network selection on ResNet-56 and ResNet-110 (CIFAR, 50 % target):
   ours (the official variant's search, FLOPs from counts) against the official approach (the same
   search where every probe deep-copies the model, prunes it and runs the counter); both must keep
   the same channels.
2. One training step with and without the regulariser's shrink (ResNet-56, batch 128).

    python benchmarks/bench_engine.py [--device cpu|cuda] [--steps 20]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine.method import saliency as sal  # noqa: E402
from osp_engine.method.costs import cost_table  # noqa: E402
from osp_engine.method.probe import build_cost_model  # noqa: E402
from osp_engine.method.graph import build_graph  # noqa: E402
from osp_engine.method.groups import build_groups, find_classifier, prune_groups  # noqa: E402
from osp_engine.models import build_model  # noqa: E402
from osp_engine.method.regularizer import Shrinker  # noqa: E402
from osp_engine.method.selection import protected_mask, select  # noqa: E402


def probe_by_copy(model, x, scores, tau, l_max):
    """One probe the official way: deep-copy, physically prune every unprotected S^ <= tau, count."""
    m = copy.deepcopy(model)
    graph = build_graph(m, x)
    groups = build_groups(m, graph, find_classifier(m, 10))
    keep = [protected_mask(s, l_max, 1.0, "official") | (s > tau) for s in scores]
    prune_groups(graph, groups, [torch.from_numpy(k) for k in keep])
    flops, _ = tp.utils.count_ops_and_params(m, x)
    return flops, keep


def official_selection(model, x, scores, target, l_max):
    """The official search (binary search over the sorted unprotected scores), a physical prune per probe."""
    dense, _ = tp.utils.count_ops_and_params(model, x)
    free = np.sort(np.concatenate([s[~protected_mask(s, l_max, 1.0, "official")] for s in scores]))
    left, right = 0, len(free) - 1
    while left <= right:
        mid = (left + right) // 2
        flops, keep = probe_by_copy(model, x, scores, free[mid], l_max)
        red = 1.0 - flops / dense
        if abs(target - red) <= 5e-4:
            break
        left, right = (mid + 1, right) if red <= target else (left, mid - 1)
    return red, keep


def bench_selection(name: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = build_model(name, 10, 32).to(device).eval()
    x = torch.zeros(1, 3, 32, 32, device=device)
    graph = build_graph(model, x)
    groups = build_groups(model, graph, find_classifier(model, 10))
    t = time.perf_counter()
    cost = build_cost_model(model, groups, x)
    _, pi = cost_table(model, groups, cost, x, "official")
    setup = time.perf_counter() - t
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        scores = sal.weighted_saliency(sal.all_saliency(groups), pi)
        ours = select(scores, cost, 0.5, 0.75, 1.0, "official")
    ours_s = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    red, keep = official_selection(model, x, scores, 0.5, 0.75)
    theirs_s = time.perf_counter() - t
    same = all((a == b).all() for a, b in zip(keep, ours.keep))
    print(f"{name:<10} selection per epoch: ours {ours_s * 1e3:8.1f} ms (reduction {ours.reduction:.4f}), "
          f"deep-copy/prune/count {theirs_s * 1e3:9.1f} ms (reduction {red:.4f}) -> {theirs_s / ours_s:6.1f}x faster, "
          f"same channels: {'yes' if same else 'NO'}; one-time cost model + cost table {setup * 1e3:.0f} ms")


def bench_step(device: torch.device, steps: int) -> None:
    torch.manual_seed(0)
    model = build_model("resnet56", 10, 32).to(device)
    x = torch.randn(128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    groups = build_groups(model, build_graph(model, x[:1]), find_classifier(model, 10))
    cost = build_cost_model(model, groups, x[:1])
    _, pi = cost_table(model, groups, cost, x[:1], "official")
    scores = sal.weighted_saliency(sal.all_saliency(groups), pi)
    shrinker = Shrinker(groups)
    shrinker.set_marked(select(scores, cost, 0.5, 0.7, 1.0).keep)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step(shrink: bool) -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if shrink:
            shrinker.step(1e-4 * 0.1)

    def seconds_per_call(fn, n: int, warm: int = 2) -> float:
        for _ in range(warm):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    def per_tensor() -> None:                       # one kernel per weight tensor, from Python
        with torch.no_grad():
            for w, marked in shrinker.targets:
                w.mul_(1.0 - 1e-5 * marked)
    plain, reg = seconds_per_call(lambda: step(False), steps), seconds_per_call(lambda: step(True), steps)
    fused, looped = seconds_per_call(lambda: shrinker.step(1e-5), 200, 1), seconds_per_call(per_tensor, 200, 1)
    print(f"resnet56 training step (batch 128): plain {plain * 1e3:.1f} ms, with shrink {reg * 1e3:.1f} ms "
          f"-> ratio {reg / plain:.3f}; the shrink alone {fused * 1e3:.3f} ms per step as one foreach call, "
          f"{looped * 1e3:.3f} ms as a Python loop over its {len(shrinker.targets)} tensors "
          f"({looped / fused:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in ("resnet56", "resnet110"):
        bench_selection(name, device)
    bench_step(device, args.steps)


if __name__ == "__main__":
    main()
