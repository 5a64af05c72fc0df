"""Per architecture: what the exact cost model costs to build, and one epoch's selection with it
against the counter-based approach (every probe of the same search deep-copies, prunes and counts).

Printed side by side from one run (no timed assertions anywhere):

    python benchmarks/bench_models.py [--models resnet18,densenet121,...] [--size 32]

Columns: groups G; build = cost-model build (G one-unit prunes of a copy + G+1 forwards); check =
the run-start check (2 pruned copies counted by Torch-Pruning); select = one epoch's search from
counts; probes = FLOPs evaluations that search made; counter = one probe done by copy+prune+count,
times the probes; ratio = counter / select.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine import saliency as sal  # noqa: E402
from osp_engine.costcheck import check_cost_model, pruned_copy  # noqa: E402
from osp_engine.costs import cost_table  # noqa: E402
from osp_engine.probe import build_cost_model  # noqa: E402
from osp_engine.groups import build_graph, build_groups, find_classifier  # noqa: E402
from osp_engine.models import build_model  # noqa: E402
from osp_engine.selection import select  # noqa: E402

DEFAULT = "resnet18,resnet50,vgg11,densenet121,googlenet,resnext50_32x4d,regnet_x_400mf,convnext_tiny," \
          "efficientnet_b0,mobilenet_v3_large,squeezenet1_1"


class CountingCost:
    """Wraps a CostModel to count the FLOPs evaluations a search makes."""
    def __init__(self, cost):
        self.cost, self.calls = cost, 0

    def __getattr__(self, name):
        return getattr(self.cost, name)

    def flops(self, counts):
        self.calls += 1
        return self.cost.flops(counts)


def bench(arch: str, size: int) -> str:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(f"tv-{arch}", 10, size, 3).eval()
    x = torch.zeros(1, 3, size, size)
    graph = build_graph(model, x)
    groups = build_groups(model, graph, find_classifier(model, 10))
    t0 = time.perf_counter()
    cost = build_cost_model(model, groups, x)
    t1 = time.perf_counter()
    check_cost_model(model, groups, cost, x, trials=2)
    t2 = time.perf_counter()
    _, pi = cost_table(model, graph, groups, cost, x, "official")
    scores = sal.weighted_saliency(sal.all_saliency(groups), pi)
    counting = CountingCost(cost)
    t3 = time.perf_counter()
    chosen = select(scores, counting, 0.5, 0.75, 1.0, "official")
    t4 = time.perf_counter()
    twin = pruned_copy(model, groups, chosen.keep, x)              # one probe, the counter's way
    counted, _ = tp.utils.count_ops_and_params(twin, x)
    t5 = time.perf_counter()
    assert int(counted) == chosen.flops
    probes = counting.calls - 1                                   # the final figure is not a probe
    counter_s = (t5 - t4) * probes
    return (f"{arch:<20} {len(groups):>4} {t1 - t0:>8.2f} {t2 - t1:>7.2f} {1e3 * (t4 - t3):>9.1f} "
            f"{probes:>6} {counter_s:>10.2f} {counter_s / (t4 - t3):>8.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"input 1x3x{args.size}x{args.size}, one thread, target 0.5, official search")
    print(f"{'model':<20} {'G':>4} {'build s':>8} {'check s':>7} {'select ms':>9} {'probes':>6} "
          f"{'counter s':>10} {'ratio':>9}")
    for arch in args.models.split(","):
        print(bench(arch, args.size), flush=True)


if __name__ == "__main__":
    main()
