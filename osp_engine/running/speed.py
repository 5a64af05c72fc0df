"""The pruned model's measured speed against the dense one: latency at batch 1 and throughput at a
large batch, timed side by side on the same device in inference mode.

FLOPs say how much arithmetic was removed; these say what it buys on a given machine (on 2 CPU cores
a pruned ResNet is often held back by per-layer overheads that FLOPs do not count). The two models are
timed alternately, round after round, so a machine that slows down mid-measurement slows both.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def _seconds(model: nn.Module, x: torch.Tensor) -> float:
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.inference_mode()
def measure_speed(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                  batch: int = 256, budget_s: float = 1.0) -> dict:
    """{"device", "batch", "latency_ms": {"dense", "pruned"}, "throughput": {"dense", "pruned"} (images/s),
    "latency_speedup", "throughput_speedup"}: medians over rounds that alternate the two models, within
    about `budget_s` seconds of timing (at least 3 rounds each)."""
    models = {"dense": dense.eval().to(device), "pruned": pruned.eval().to(device)}
    one = torch.randn(1, *input_shape, device=device)
    many = torch.randn(batch, *input_shape, device=device)
    for m in models.values():                                   # warm-up: allocations, kernels chosen
        m(one), m(many)
    lat: dict[str, list[float]] = {k: [] for k in models}
    thr: dict[str, list[float]] = {k: [] for k in models}
    t_end = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 3 or (time.perf_counter() < t_end and rounds < 200):
        for name, m in models.items():
            lat[name].append(_seconds(m, one))
            thr[name].append(batch / _seconds(m, many))
        rounds += 1
    out = {"device": str(device), "batch": batch, "rounds": rounds,
           "latency_ms": {k: 1e3 * statistics.median(v) for k, v in lat.items()},
           "throughput": {k: statistics.median(v) for k, v in thr.items()}}
    out["latency_speedup"] = out["latency_ms"]["dense"] / out["latency_ms"]["pruned"]
    out["throughput_speedup"] = out["throughput"]["pruned"] / out["throughput"]["dense"]
    return out


def record_speed(store, run_dir, arch: dict, device: torch.device, budget_s: float, epoch: int) -> None:
    """Time a run's exported model.pt against a fresh dense model of the same architecture and store the
    figures as a 'speed' event; a failure is recorded instead (the finished run stays finished)."""
    from ..storage.export import MODEL_FILE, load_pruned
    from ..models import build_model
    try:
        dense = build_model(arch["model"], arch["num_classes"], arch["image_size"], arch["in_channels"])
        pruned = load_pruned(run_dir / MODEL_FILE, map_location=str(device))
        batch = 256 if arch["image_size"] <= 64 else 32
        s = measure_speed(dense, pruned, tuple(arch["input_shape"]), device, batch, budget_s)
    except Exception as e:
        store.event("speed_failed", f"the speed measurement failed ({type(e).__name__}: {e})")
        return
    store.event("speed", f"exported model on {s['device']}: {s['latency_speedup']:.2f}x the dense model's speed at "
                         f"batch 1, {s['throughput_speedup']:.2f}x its throughput at batch {s['batch']}",
                epoch=epoch, **s)
