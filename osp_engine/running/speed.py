"""The pruned model's measured speed against the dense one: latency at batch 1 and throughput at a
large batch, timed side by side on the same device in inference mode, in PyTorch eager and, when
onnxruntime is installed, in ONNX Runtime (where models are often deployed).

FLOPs say how much arithmetic was removed; these say what it buys on a given machine (on 2 CPU cores
a pruned ResNet is often held back by per-layer overheads that FLOPs do not count). The two models are
timed alternately, round after round, so a machine that slows down mid-measurement slows both.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def alternate(calls: dict, budget_s: float, min_rounds: int = 3, max_rounds: int = 200) -> dict[object, list[float]]:
    """Time every call of `calls` ({name: call()}) in turn, round after round, so that a machine that slows
    down mid-measurement slows them all: each called once to warm up (allocations, kernels chosen), then
    rounds for about `budget_s` seconds (at least min_rounds, at most max_rounds); {name: seconds per call}."""
    for call in calls.values():
        call()
    spent: dict[object, list[float]] = {k: [] for k in calls}
    t_end = time.perf_counter() + budget_s
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() < t_end and rounds < max_rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            spent[name].append(time.perf_counter() - t0)
        rounds += 1
    return spent


def _race(pairs: dict, batch: int, budget_s: float) -> dict:
    """Alternate each model's (batch-1 call, batch call) round after round for about `budget_s` seconds
    (at least 3 rounds); {"batch", "rounds", "latency_ms", "throughput", "latency_speedup", "throughput_speedup"}."""
    calls = {(name, kind): call for name, both in pairs.items() for kind, call in zip(("one", "many"), both)}
    spent = alternate(calls, budget_s)
    out = {"batch": batch, "rounds": len(next(iter(spent.values()))),
           "latency_ms": {k: 1e3 * statistics.median(spent[k, "one"]) for k in pairs},
           "throughput": {k: statistics.median(batch / t for t in spent[k, "many"]) for k in pairs}}
    out["latency_speedup"] = out["latency_ms"]["dense"] / out["latency_ms"]["pruned"]
    out["throughput_speedup"] = out["throughput"]["pruned"] / out["throughput"]["dense"]
    return out


def median_times(calls: list, budget_s: float, min_rounds: int = 20, max_rounds: int = 200) -> list[float]:
    """Median seconds of each call of `calls` (call()), timed in turns (`alternate`) for about `budget_s`
    seconds, at least `min_rounds` and at most `max_rounds` rounds."""
    spent = alternate(dict(enumerate(calls)), budget_s, min_rounds, max_rounds)
    return [statistics.median(spent[i]) for i in range(len(calls))]


def cpu_session(model, threads: int = 1):
    """An ONNX Runtime session on the CPU with `threads` threads (intra and inter op) of the model at the path
    `model`, or of `model` itself when it is the serialized model (bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def session_latencies(sessions: list, feed: dict, budget_s: float, min_rounds: int = 20) -> list[float]:
    """Median seconds of one run of each ONNX Runtime session on `feed` ({input name: array}), timed in turns
    (`median_times`) for about `budget_s` seconds and at least `min_rounds` rounds."""
    return median_times([lambda s=s: s.run(None, feed) for s in sessions], budget_s, min_rounds)


@torch.inference_mode()
def measure_speed(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                  batch: int = 256, budget_s: float = 1.0) -> dict:
    """PyTorch eager: {"device", "batch", "rounds", "latency_ms": {"dense", "pruned"}, "throughput": {"dense",
    "pruned"} (images/s), "latency_speedup", "throughput_speedup"}: medians over rounds that alternate the
    two models, within about `budget_s` seconds of timing (at least 3 rounds each)."""
    one, many = _inputs(input_shape, batch)
    one, many = one.to(device), many.to(device)

    def timed(m: nn.Module):
        m = m.eval().to(device)
        return (lambda: (m(one), _sync(device))), (lambda: (m(many), _sync(device)))

    return {"device": str(device), **_race({"dense": timed(dense), "pruned": timed(pruned)}, batch, budget_s)}


def _inputs(input_shape: tuple[int, ...], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs of batch 1 and `batch` from their own generator: a run timed at its end must not
    draw from the global one that another run of the studio is building its network from."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, *input_shape, generator=g), torch.randn(batch, *input_shape, generator=g)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_speed_onnxruntime(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                              batch: int = 256, budget_s: float = 1.0) -> dict | None:
    """The same figures in ONNX Runtime (its CUDA provider on a GPU, else CPU, with PyTorch's thread
    count), both models exported with a dynamic batch; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import tempfile
    from pathlib import Path

    from ..storage.export import write_onnx

    cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    one, many = (t.numpy() for t in _inputs(input_shape, batch))
    pairs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in (("dense", dense), ("pruned", pruned)):
            path = str(Path(tmp) / f"{name}.onnx")
            write_onnx(m.cpu(), torch.from_numpy(one), path)
            session = ort.InferenceSession(path, options, providers=(["CUDAExecutionProvider"] if cuda else [])
                                           + ["CPUExecutionProvider"])
            pairs[name] = (lambda s=session: s.run(None, {"input": one})), (lambda s=session: s.run(None, {"input": many}))
        return {"device": "cuda" if cuda else "cpu", **_race(pairs, batch, budget_s)}


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
        s["onnxruntime"] = measure_speed_onnxruntime(dense, pruned, tuple(arch["input_shape"]), device, batch, budget_s)
    except Exception as e:
        store.event("speed_failed", f"the speed measurement failed ({type(e).__name__}: {e})")
        return
    ort = s["onnxruntime"]
    in_ort = "" if ort is None else (f"; in ONNX Runtime {ort['latency_speedup']:.2f}x and "
                                     f"{ort['throughput_speedup']:.2f}x")
    store.event("speed", f"exported model on {s['device']}: {s['latency_speedup']:.2f}x the dense model's speed at "
                         f"batch 1, {s['throughput_speedup']:.2f}x its throughput at batch {s['batch']} (PyTorch)"
                         + in_ort, epoch=epoch, **s)
