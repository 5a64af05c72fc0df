"""Per architecture: what the exact cost model costs to build, and one epoch's selection with it
against the counter-based approach (every probe of the same search deep-copies, prunes and counts).

Printed side by side from one run (no timed assertions anywhere):

    python benchmarks/bench_models.py [--models resnet18,densenet121,timm-rexnet_100,...] [--size 32]

Models: torchvision architectures by bare name, or any registry name (`timm-rexnet_100`, `resnet56`).
Columns: prunable groups G; whole = groups kept whole; plan = prepare_network as a run starts it (graph,
groups, one-unit probes of a copy, the run-start check of 2 pruned copies, pi); select = one epoch's search from
counts; probes = FLOPs evaluations that search made; counter = one probe done by copy+prune+count,
times the probes; ratio = counter / select. A refused model prints how long the refusal took, and why.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine.method import saliency as sal  # noqa: E402
from osp_engine.method.tp import tp  # noqa: E402
from osp_engine.method.catalog import OWN_MODELS  # noqa: E402
from osp_engine.method.costcheck import pruned_copy  # noqa: E402
from osp_engine.models import build_model  # noqa: E402
from osp_engine.method.groups import UnsupportedModel  # noqa: E402
from osp_engine.method.network import prepare_network  # noqa: E402
from osp_engine.method.selection import select  # noqa: E402

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


def bench(name: str, size: int) -> str:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(name, 10, size, 3).eval()
    x = torch.zeros(1, 3, size, size)
    t0 = time.perf_counter()
    try:
        net = prepare_network(model, 10, x, "official", checks=2)     # the whole plan, as a run starts it
    except UnsupportedModel as e:
        return f"{name:<28} refused after {time.perf_counter() - t0:.2f} s: {e}"
    t1 = time.perf_counter()
    scores = sal.weighted_saliency(sal.all_saliency(net.groups), net.pi)
    counting = CountingCost(net.cost)
    t3 = time.perf_counter()
    chosen = select(scores, counting, 0.5, 0.75, 1.0, "official")
    t4 = time.perf_counter()
    twin = pruned_copy(model, net.groups, chosen.keep, x)          # one probe, the counter's way
    counted, _ = tp.utils.count_ops_and_params(twin, x)
    t5 = time.perf_counter()
    assert int(counted) == chosen.flops
    probes = counting.calls - 1                                   # the final figure is not a probe
    counter_s = (t5 - t4) * probes
    return (f"{name:<28} {len(net.groups):>4} {len(net.whole):>5} {t1 - t0:>7.2f} {1e3 * (t4 - t3):>9.1f} "
            f"{probes:>6} {counter_s:>10.2f} {counter_s / (t4 - t3):>8.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"input 1x3x{args.size}x{args.size}, one thread, target 0.5, official search")
    print(f"{'model':<28} {'G':>4} {'whole':>5} {'plan s':>7} {'select ms':>9} {'probes':>6} "
          f"{'counter s':>10} {'ratio':>9}")
    for name in args.models.split(","):
        print(bench(name if name.startswith(("tv-", "timm-")) or name in OWN_MODELS else f"tv-{name}", args.size),
              flush=True)


if __name__ == "__main__":
    main()
