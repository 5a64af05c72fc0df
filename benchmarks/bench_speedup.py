"""The pruned model's measured speed against the dense one: latency at batch 1 and throughput at
batch 256 (32 at 224 px), timed side by side (osp_engine/running/speed.py) in PyTorch eager and in ONNX
Runtime, on CPU and, when one is visible, on a GPU; with and without round_to=8. Beside each speed-up:
the FLOPs ratio (dense over pruned, the bound) and their quotient, the speed efficiency.

Each network is pruned by the method's own selection at the target (50 % of FLOPs by default) on
its freshly initialised weights: the speed of a pruned network depends on its shape, not on its
weights. `--run RUN_DIR` times a run's exported model.pt instead.

    python benchmarks/bench_speedup.py [--models resnet56,vgg16] [--round-to 0,8] [--target 0.5] [--budget 3]
    python benchmarks/bench_speedup.py --int8 [--models ...]    # also the pruned model in INT8 (ONNX Runtime)
    python benchmarks/bench_speedup.py --latency [--models ...] # only: cost=latency against cost=flops, and INT8

--int8 adds a table: batch-1 latency in ONNX Runtime (one thread) of the dense FP32, the pruned FP32 and
the pruned INT8 model (static quantization, osp_engine/interfaces/int8.py, calibrated on 4 batches of 8
random inputs: the weights are random too), timed in turns; and the INT8 model's top-1 agreement with
the pruned FP32 model on 64 random inputs.

--latency prints one table instead: each network pruned at the target with cost=flops and with
cost=latency (the same saliency; the latency table measured in ONNX Runtime, one thread, batch 1,
cached in --cache; cost=latency keeps multiples of 8 channels, Config.kept_multiple), and the
cost=latency model quantized to INT8 as --int8 does; the dense and the three pruned models timed in
turns in ONNX Runtime (one thread, batch 1): median and interquartile range of each, the FLOPs each
keeps, the table's predicted latency against the measured one, INT8's top-1 agreement with FP32.
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
from osp_engine.running.speed import measure_speed, measure_speed_onnxruntime  # noqa: E402

SHAPES = {"digits-resnet8": (10, 8, 1), "digits-resnet14": (10, 8, 1), "tv-resnet50": (1000, 224, 3)}   # (classes, size, channels)
BATCH = {224: 32}                           # the throughput batch: 256, or 32 at 224 px


def pruned_pair(name: str, target: float, round_to: int) -> tuple[torch.nn.Module, torch.nn.Module, tuple, float]:
    """(dense, pruned, input shape, FLOPs ratio dense / pruned) for a registry network pruned at `target`."""
    classes, size, channels = SHAPES.get(name, (10, 32, 3))
    torch.manual_seed(0)
    dense = build_model(name, classes, size, channels).eval()
    net = prepare_network(copy.deepcopy(dense), classes, torch.zeros(1, channels, size, size), "official", 0)
    chosen = select(sal.weighted_saliency(sal.all_saliency(net.groups), net.pi), net.cost, target, 0.75, 1.0,
                    round_to=round_to)
    prune_groups(net.graph, net.groups, [torch.from_numpy(k) for k in chosen.keep])
    return dense, net.model.eval(), (channels, size, size), net.cost.dense_flops / chosen.flops


def latency_pruned(name: str, target: float, cache: Path):
    """(dense, flops-pruned, latency-pruned, input shape, {figures}) for a registry network at `target`:
    one saliency, selected against FLOPs and against the ONNX Runtime latency table (batch 1, one thread)."""
    import time

    from osp_engine.running.latency import build_latency

    classes, size, channels = SHAPES.get(name, (10, 32, 3))
    torch.manual_seed(0)
    dense = build_model(name, classes, size, channels).eval()
    out, facts = [], {}
    for cost in ("flops", "latency"):
        net = prepare_network(copy.deepcopy(dense), classes, torch.zeros(1, channels, size, size), "official", 0)
        t0 = time.perf_counter()
        net.latency, stats = build_latency(net, "onnxruntime", 1, 1, cache)
        facts.setdefault("table_s", time.perf_counter() - t0)
        facts.setdefault("entries", stats["entries"])
        chosen = select(sal.weighted_saliency(sal.all_saliency(net.groups), net.pi), net.cost, target, 0.75, 1.0,
                        round_to=8 if cost == "latency" else 0, measure=net.measure(cost))   # Config.kept_multiple
        prune_groups(net.graph, net.groups, [torch.from_numpy(k) for k in chosen.keep])
        counts = [int(k.sum()) for k in chosen.keep]
        facts[cost] = dict(flops_kept=chosen.flops / net.cost.dense_flops, predicted=net.latency.predict(counts),
                           dense_predicted=net.latency.dense)
        out.append(net.model.eval())
    return dense, out[0], out[1], (channels, size, size), facts


def latency_row(name: str, target: float, cache: Path, budget: float) -> str:
    """A markdown row: cost=flops against cost=latency, and the cost=latency model in INT8, measured in ONNX
    Runtime at batch 1 on one thread, the four models timed in turns."""
    import statistics
    import tempfile

    from osp_engine.interfaces.int8 import quantize
    from osp_engine.running.speed import alternate, cpu_session
    from osp_engine.storage.export import write_onnx

    dense, by_flops, by_latency, shape, f = latency_pruned(name, target, cache)
    g = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, *shape, generator=g).numpy() for _ in range(4)]
    x = torch.randn(64, *shape, generator=g).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i}.onnx" for i in range(4)]
        for m, path in zip((dense, by_flops, by_latency), paths):
            write_onnx(m, torch.zeros(1, *shape), path)
        quantize(paths[2], paths[3], calibration)
        sessions = [cpu_session(p) for p in paths]
    spent = alternate({i: (lambda s=s: s.run(None, {"input": x[:1]})) for i, s in enumerate(sessions)}, budget, 20)
    agree = (sessions[2].run(None, {"input": x})[0].argmax(1) == sessions[3].run(None, {"input": x})[0].argmax(1))

    def ms(i: int) -> str:
        q = statistics.quantiles([1e3 * t for t in spent[i]], n=4)
        return f"{1e3 * statistics.median(spent[i]):.2f} ({q[0]:.2f}-{q[2]:.2f})"

    med = [statistics.median(spent[i]) for i in range(4)]
    fl, la = f["flops"], f["latency"]
    return (f"| {name} | {ms(0)} | {ms(1)}: {med[0] / med[1]:.2f}x, {100 * fl['flops_kept']:.1f} % | "
            f"{ms(2)}: {med[0] / med[2]:.2f}x, {100 * la['flops_kept']:.1f} % | {1e3 * la['predicted']:.2f} "
            f"({100 * (la['predicted'] / med[2] - 1):+.1f} %); {la['dense_predicted'] / la['predicted']:.2f}x | "
            f"{ms(3)}: {med[0] / med[3]:.2f}x, {100 * agree.mean():.0f} % | {f['entries']} in {f['table_s']:.0f} s |")


def rows(name: str, round_to: int, s: dict, ratio: float) -> list[str]:
    """Markdown rows: one per runtime, speed-ups beside the FLOPs ratio and their quotient."""
    out = []
    for runtime, r in (("PyTorch eager", s), ("ONNX Runtime", s.get("onnxruntime"))):
        if r is None:
            continue
        out.append(f"| {name} | {round_to or '-'} | {runtime} ({r['device']}) | {ratio:.2f}x | "
                   f"{r['latency_ms']['dense']:.2f} -> {r['latency_ms']['pruned']:.2f} ms | {r['latency_speedup']:.2f}x | "
                   f"{r['latency_speedup'] / ratio:.2f} | {r['throughput']['dense']:.0f} -> {r['throughput']['pruned']:.0f} "
                   f"img/s at {r['batch']} | {r['throughput_speedup']:.2f}x | {r['throughput_speedup'] / ratio:.2f} |")
    return out


@torch.inference_mode()
def layer_times(model: torch.nn.Module, shape: tuple, batch: int, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of each conv and linear layer of `model` at `batch`, timed by forward hooks."""
    import statistics
    import time
    starts, spent = {}, {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_pre_hook(lambda mod, inp, n=name: starts.__setitem__(n, time.perf_counter())))
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, n=name: spent.setdefault(n, []).append(1e3 * (time.perf_counter() - starts[n]))))
    x = torch.randn(batch, *shape)
    for _ in range(repeats + 2):
        model(x)
    for h in hooks:
        h.remove()
    return {n: statistics.median(v[2:]) for n, v in spent.items()}


def layer_report(name: str, dense, pruned, shape: tuple, batch: int) -> None:
    """Per-layer time, dense against pruned, sorted by the time the pruned layer still takes: which layers
    did not get faster, and their share of the pruned model's time."""
    d, p = layer_times(dense.eval(), shape, batch), layer_times(pruned.eval(), shape, batch)
    total = sum(p.values())
    print(f"\n{name}, batch {batch}: per-layer ms, dense -> pruned (the 12 slowest pruned layers)")
    kinds = {n: m for n, m in pruned.named_modules()}
    for n in sorted(p, key=p.get, reverse=True)[:12]:
        m = kinds[n]
        what = (f"conv {m.in_channels}->{m.out_channels} k{m.kernel_size[0]} groups {m.groups}"
                if isinstance(m, torch.nn.Conv2d) else f"linear {m.in_features}->{m.out_features}")
        print(f"  {n:<28} {what:<36} {d[n]:7.3f} -> {p[n]:7.3f} ms ({d[n] / p[n]:.2f}x, {100 * p[n] / total:.0f} %)")
    print(f"  all conv/linear layers {sum(d.values()):.2f} -> {total:.2f} ms ({sum(d.values()) / total:.2f}x)")


def int8_row(name: str, dense: torch.nn.Module, pruned: torch.nn.Module, shape: tuple) -> str:
    """A markdown row: dense FP32, pruned FP32 and pruned INT8 latency at batch 1 in ONNX Runtime, and the
    INT8 model's top-1 agreement with the pruned FP32 one."""
    import tempfile

    from osp_engine.interfaces.int8 import quantize
    from osp_engine.running.speed import cpu_session, session_latencies
    from osp_engine.storage.export import write_onnx

    g = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, *shape, generator=g).numpy() for _ in range(4)]
    x = torch.randn(64, *shape, generator=g).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{k}.onnx" for k in ("dense", "pruned", "int8")]
        write_onnx(dense, torch.zeros(1, *shape), paths[0])
        write_onnx(pruned, torch.zeros(1, *shape), paths[1])
        quantize(paths[1], paths[2], calibration)
        sessions = [cpu_session(p) for p in paths]
        d, p, q = session_latencies(sessions, {"input": x[:1]}, budget_s=3.0)
        agree = (sessions[1].run(None, {"input": x})[0].argmax(1) == sessions[2].run(None, {"input": x})[0].argmax(1))
    return (f"| {name} | {1e3 * d:.3f} ms | {1e3 * p:.3f} ms ({d / p:.2f}x) | {1e3 * q:.3f} ms ({p / q:.2f}x over "
            f"pruned FP32) | {d / q:.2f}x | {100 * agree.mean():.0f} % |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-resnet8,resnet56,vgg16,tv-resnet50,mobilenetv2")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--round-to", default="0,8", help="round_to values to compare (0: off)")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per network, runtime and device")
    ap.add_argument("--run", default=None, help="a run folder: time its exported model.pt")
    ap.add_argument("--layers", action="store_true", help="also time every layer, dense against pruned (eager)")
    ap.add_argument("--int8", action="store_true", help="also the pruned model in INT8, ONNX Runtime (a second table)")
    ap.add_argument("--latency", action="store_true", help="only the table of cost=latency against cost=flops")
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parent / ".latency"),
                    help="the latency table's cache folder (a second invocation times no layer)")
    args = ap.parse_args()
    if args.latency:
        return latency_table(args)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{torch.get_num_threads()} CPU threads; devices: {', '.join(map(str, devices))}; target {args.target}")
    print("| model | round_to | runtime | FLOPs ratio | latency at batch 1 | speed-up | efficiency | throughput | "
          "speed-up | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    if args.run:
        blob = torch.load(Path(args.run) / "model.pt", weights_only=True)["arch"]
        dense = build_model(blob["model"], blob["num_classes"], blob["image_size"], blob["in_channels"]).eval()
        pruned = load_pruned(Path(args.run) / "model.pt")
        ratio = count_flops(dense, blob["input_shape"]) / count_flops(pruned, blob["input_shape"])
        for dev in devices:
            print("\n".join(rows(f"{blob['model']} (exported)", 0, both(dense, pruned, tuple(blob["input_shape"]), dev,
                                                                         256, args.budget), ratio)), flush=True)
        return
    for name in args.models.split(","):
        for round_to in (int(r) for r in args.round_to.split(",")):
            dense, pruned, shape, ratio = pruned_pair(name, args.target, round_to)
            for dev in devices:
                s = both(dense, pruned, shape, dev, BATCH.get(shape[-1], 256), args.budget)
                print("\n".join(rows(name, round_to, s, ratio)), flush=True)
            if args.layers:
                layer_report(f"{name} round_to={round_to}", dense, pruned, shape, 1)
    if args.int8:
        print("\n| model | dense FP32, batch 1 | pruned FP32 | pruned INT8 | INT8 pruned over dense FP32 | "
              "INT8 top-1 agreement with FP32 |\n|---|---|---|---|---|---|")
        for name in args.models.split(","):
            dense, pruned, shape, _ = pruned_pair(name, args.target, 0)
            print(int8_row(name, dense, pruned, shape), flush=True)


def latency_table(args) -> None:
    print(f"\nONNX Runtime, CPU, 1 thread, batch 1, target {args.target}: median (interquartile range) in ms; "
          f"speed-up over dense FP32; FLOPs kept\n"
          "| model | dense | cost=flops | cost=latency | predicted ms (vs measured); speed-up | cost=latency in INT8; "
          "top-1 agreement | table entries |\n|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        print(latency_row(name, args.target, Path(args.cache), args.budget), flush=True)


def both(dense, pruned, shape, device, batch: int, budget: float) -> dict:
    s = measure_speed(dense, pruned, shape, device, batch, budget)
    s["onnxruntime"] = measure_speed_onnxruntime(dense, pruned, shape, device, batch, budget)
    return s


def count_flops(model: torch.nn.Module, shape) -> float:
    from osp_engine.method.tp import tp
    return float(tp.utils.count_ops_and_params(model, torch.zeros(1, *shape))[0])


if __name__ == "__main__":
    main()
