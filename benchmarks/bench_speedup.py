"""The pruned model's measured speed against the dense one: latency at batch 1 and throughput at
batch 256, timed side by side (osp_engine/running/speed.py), on CPU and, when one is visible, on a GPU.

Each network is pruned by the method's own selection at the target (50 % of FLOPs by default) on
its freshly initialised weights: the speed of a pruned network depends on its shape, not on its
weights. `--run RUN_DIR` times a run's exported model.pt instead.

    python benchmarks/bench_speedup.py [--models resnet56,digits-resnet8] [--target 0.5] [--budget 3]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osp_engine.method import saliency as sal  # noqa: E402
from osp_engine.storage.export import load_pruned  # noqa: E402
from osp_engine.method.groups import prune_groups  # noqa: E402
from osp_engine.models import build_model  # noqa: E402
from osp_engine.method.network import prepare_network  # noqa: E402
from osp_engine.method.selection import select  # noqa: E402
from osp_engine.running.speed import measure_speed  # noqa: E402

SHAPES = {"digits-resnet8": (10, 8, 1), "digits-resnet14": (10, 8, 1)}      # (classes, image size, channels)


def pruned_pair(name: str, target: float) -> tuple[torch.nn.Module, torch.nn.Module, tuple, float]:
    """(dense, pruned, input shape, FLOPs kept) for a registry network pruned at `target`."""
    classes, size, channels = SHAPES.get(name, (10, 32, 3))
    torch.manual_seed(0)
    dense = build_model(name, classes, size, channels)
    net = prepare_network(copy.deepcopy(dense), classes, torch.zeros(1, channels, size, size), "official", 0)
    chosen = select(sal.weighted_saliency(sal.all_saliency(net.groups), net.pi), net.cost, target, 0.75, 1.0)
    prune_groups(net.graph, net.groups, [torch.from_numpy(k) for k in chosen.keep])
    return dense, net.model, (channels, size, size), chosen.flops / net.cost.dense_flops


def line(label: str, s: dict, kept: float | None = None) -> str:
    flops = f"FLOPs kept {100 * kept:.1f} %, " if kept is not None else ""
    return (f"{label:<30} {s['device']:<6} {flops}latency {s['latency_ms']['dense']:.2f} -> "
            f"{s['latency_ms']['pruned']:.2f} ms ({s['latency_speedup']:.2f}x), throughput at batch {s['batch']} "
            f"{s['throughput']['dense']:.0f} -> {s['throughput']['pruned']:.0f} img/s ({s['throughput_speedup']:.2f}x), "
            f"{s['rounds']} rounds")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-resnet8,resnet56,vgg16")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per network and device")
    ap.add_argument("--run", default=None, help="a run folder: time its exported model.pt")
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{torch.get_num_threads()} CPU threads; devices: {', '.join(map(str, devices))}")
    if args.run:
        blob = torch.load(Path(args.run) / "model.pt", weights_only=True)["arch"]
        dense = build_model(blob["model"], blob["num_classes"], blob["image_size"], blob["in_channels"])
        pruned = load_pruned(Path(args.run) / "model.pt")
        for dev in devices:
            print(line(f"{blob['model']} (exported)", measure_speed(dense, pruned, tuple(blob["input_shape"]), dev,
                                                                  budget_s=args.budget)))
        return
    for name in args.models.split(","):
        dense, pruned, shape, kept = pruned_pair(name, args.target)
        for dev in devices:
            print(line(name, measure_speed(dense, pruned, shape, dev, budget_s=args.budget), kept), flush=True)


if __name__ == "__main__":
    main()
