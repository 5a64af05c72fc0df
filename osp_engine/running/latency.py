"""The latency table measured on the deploy runtime (cost=latency), cached, and the pruned model timed there.

Each convolution and linear layer is timed alone at a grid of its widths (method/latency.py) on the
runtime a user deploys with: ONNX Runtime on the CPU (`onnxruntime`, the default) or PyTorch eager on
the run's device (`torch`, CUDA when the run is on a GPU). A runtime is a `Timer`: `layer(spec, batch)`
gives one layer's seconds with the runtime's own call overhead taken off, `models(models, example)` the
whole models' seconds, timed in turns. Entries are cached in `<runs root>/.latency/<runtime>.json`,
keyed by the runtime and its version, the device and thread count (the file) and the layer's shape and
batch (the entry), so a second run of the same network measures nothing.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..method.flops import counted_layers
from ..method.groups import UnsupportedModel
from ..method.costcheck import pruned_copy
from ..method.latency import (LatencyModel, LayerSpec, calibrate, calibration_counts, check_no_other_widths,
                              latency_model, layer_spec, width_maps)
from ..method.network import Prunable
from .distributed import World
from .speed import cpu_session, median_times, session_latencies

CACHE_DIR = ".latency"        # under the runs root


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def layer_seconds(call: Callable[[], object]) -> float:
    """Median seconds of one layer's call: at least 10 runs and 0.02 s of them (at most 2000)."""
    return median_times([call], 0.02, 10, 2000)[0]


def _input(spec: LayerSpec, batch: int) -> np.ndarray:
    g = np.random.default_rng(0)
    shape = (batch * spec.rows, spec.a) if spec.kind == "linear" else (batch, spec.a, *spec.hw)
    return g.standard_normal(shape, dtype=np.float32)


def random_input(example: torch.Tensor, batch: int) -> torch.Tensor:
    """A batch of `batch` standard normal inputs shaped like `example`'s, from a generator of its own: a
    network is timed on data like a deployed one's (ONNX Runtime ran VGG-16 8 % slower on zeros)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *example.shape[1:], generator=g).to(example.device)


class OnnxRuntimeTimer:
    """ONNX Runtime's CPU provider with `threads` threads: a layer as a one-node graph (Conv or Gemm)."""

    def __init__(self, threads: int) -> None:
        import onnxruntime as ort

        self.threads = threads
        self.identity = f"onnxruntime {ort.__version__}, {cpu_name()}, {threads} thread{'s' * (threads != 1)}"
        self.measured = 0
        self.overhead = self._time(self._graph("Identity", [], [1], [1], {}), np.zeros(1, np.float32))

    def _graph(self, op: str, weights: list[np.ndarray], x_shape, y_shape, attrs: dict) -> bytes:
        from onnx import TensorProto, helper, numpy_helper

        names = [f"w{i}" for i in range(len(weights))]
        node = helper.make_node(op, ["x", *names], ["y"], **attrs)
        graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                                  [numpy_helper.from_array(w, n) for w, n in zip(weights, names)])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    def _time(self, model: bytes, x: np.ndarray) -> float:
        session = cpu_session(model, self.threads)
        return layer_seconds(lambda: session.run(None, {"x": x}))

    def layer(self, spec: LayerSpec, batch: int) -> float:
        """Seconds of one call of the layer alone, less ONNX Runtime's call overhead (never below 0)."""
        self.measured += 1
        x = _input(spec, batch)
        g = np.random.default_rng(1)
        if spec.kind == "linear":
            w = g.standard_normal((spec.b, spec.a), dtype=np.float32)
            weights = [w] + ([np.zeros(spec.b, np.float32)] if spec.bias else [])
            model = self._graph("Gemm", weights, list(x.shape), [x.shape[0], spec.b], {"transB": 1})
        else:
            groups = spec.conv_groups
            w = g.standard_normal((spec.b * groups, spec.a // groups, *spec.kernel), dtype=np.float32)
            weights = [w] + ([np.zeros(spec.b * groups, np.float32)] if spec.bias else [])
            attrs = dict(kernel_shape=list(spec.kernel), strides=list(spec.stride), dilations=list(spec.dilation),
                         pads=list(spec.padding) * 2, group=groups)
            model = self._graph("Conv", weights, list(x.shape), None, attrs)
        return max(self._time(model, x) - self.overhead, 0.0)

    def models(self, models: list[nn.Module], example: torch.Tensor, budget_s: float = 1.0) -> list[float]:
        """Median seconds of each model on `example`, exported to ONNX and timed in turns."""
        from ..storage.export import write_onnx

        with tempfile.TemporaryDirectory() as tmp:
            sessions = []
            for i, m in enumerate(models):
                path = Path(tmp) / f"m{i}.onnx"
                write_onnx(copy.deepcopy(m).cpu().eval(), example.cpu(), path)
                sessions.append(cpu_session(path, self.threads))
        return session_latencies(sessions, {"input": example.cpu().numpy()}, budget_s)


class TorchTimer:
    """PyTorch eager in inference mode on `device` (CUDA synchronised), with PyTorch's thread count."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
            f"{cpu_name()}, {torch.get_num_threads()} threads"
        self.identity = f"torch {torch.__version__}, {where}"
        self.measured = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def layer(self, spec: LayerSpec, batch: int) -> float:
        self.measured += 1
        x = torch.from_numpy(_input(spec, batch)).to(self.device)
        if spec.kind == "linear":
            m = nn.Linear(spec.a, spec.b, bias=spec.bias)
        else:
            groups = spec.conv_groups
            m = nn.Conv2d(spec.a, spec.b * groups, spec.kernel, spec.stride, spec.padding, spec.dilation, groups,
                          bias=spec.bias)
        m = m.to(self.device).eval()
        return layer_seconds(lambda: (m(x), self._sync()))

    @torch.inference_mode()
    def models(self, models: list[nn.Module], example: torch.Tensor, budget_s: float = 1.0) -> list[float]:
        x = example.to(self.device)
        ready = [copy.deepcopy(m).to(self.device).eval() for m in models]
        return median_times([lambda m=m: (m(x), self._sync()) for m in ready], budget_s)


RUNTIMES: dict[str, Callable[[int, torch.device], object]] = {
    "onnxruntime": lambda threads, device: OnnxRuntimeTimer(threads),
    "torch": lambda threads, device: TorchTimer(device),
}


class LatencyCache:
    """{layer key: seconds} of one runtime identity, in a JSON file (written whole, atomically, merged
    with what another run wrote meanwhile)."""

    def __init__(self, folder: Path, identity: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", identity).strip("-")[:120]
        self.path = Path(folder) / f"{slug}-{hashlib.sha1(identity.encode()).hexdigest()[:8]}.json"
        self.identity = identity
        self.entries: dict[str, float] = self._read()

    def _read(self) -> dict[str, float]:
        try:
            return dict(json.loads(self.path.read_text())["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def save(self) -> None:
        merged = {**self._read(), **self.entries}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "entries": merged}, indent=0, sort_keys=True))
        os.replace(tmp, self.path)


def layer_specs(net: Prunable, example: torch.Tensor) -> tuple[list[LayerSpec], list[int]]:
    """The table's layers: every call of a Conv2d or Linear layer the counter charges, with its index in
    the probe's layout (the calls come first there, in the same order: one forward pass each)."""
    model = net.model
    names = {m: n for n, m in model.named_modules()}
    seen: list[tuple[str, nn.Module, tuple]] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((names[m], m, tuple(inp[0].shape))))
             for m in counted_layers(model)]
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            m.training = training
    layout = net.probe.layout
    if [n for n, _, _ in seen] != [layout[i][0] for i in range(len(seen))]:
        raise RuntimeError("the table's forward pass differs from the probe's: the model's calls changed")
    calls = [i for i, (_, m, _) in enumerate(seen) if isinstance(m, (nn.Conv2d, nn.Linear))]
    check_no_other_widths(layout, net.probe.coef, set(calls))
    return [layer_spec(seen[i][0], seen[i][1], seen[i][2]) for i in calls], calls


def narrowed(net: Prunable, counts: np.ndarray) -> nn.Module:
    """A copy of the network keeping the first counts[g] channels (whole units) of every group g."""
    keep = [net.cost.unit_index(g.gid) < counts[g.gid] // net.cost.units[g.gid] for g in net.groups]
    return pruned_copy(net.model, net.groups, keep, net.example)


def structure_key(net: Prunable, example: torch.Tensor, batch: int) -> str:
    """The dense model's cache key: its counted calls and parameters with their shapes, and the input."""
    digest = hashlib.sha1(repr((net.probe.layout, tuple(example.shape[1:]))).encode()).hexdigest()
    return f"model {digest} n{batch}"


def build_latency(net: Prunable, runtime: str, batch: int, threads: int, cache_dir: Path,
                  say: Callable[[str], None] | None = None) -> tuple[LatencyModel, dict]:
    """The LatencyModel of `net` (dense, untrained) on `runtime`, and {"entries", "measured", "seconds",
    "runtime"}: what came from the cache and what was timed. say(line): progress every 2 s."""
    t0, last = time.perf_counter(), [0.0]
    timer = RUNTIMES[runtime](threads, net.example.device)
    cache = LatencyCache(cache_dir, timer.identity)
    specs, calls = layer_specs(net, net.example)
    wanted = [(s, a, b) for s in specs for a in s.grid()[0] for b in s.grid()[1]]
    keys = [s.at(a, b).key(batch) for s, a, b in wanted]
    todo = {k: (s, a, b) for (s, a, b), k in zip(wanted, keys) if k not in cache.entries}   # each key once
    try:
        for done, (key, (s, a, b)) in enumerate(todo.items(), 1):
            cache.entries[key] = timer.layer(s.at(a, b), batch)
            now = time.perf_counter() - t0
            if say is not None and (now - last[0] >= 2.0 or done == len(todo)):
                last[0] = now
                say(f"timing the layers on {runtime}: {done}/{len(todo)} table entries ({now:.0f} s)")
        example = random_input(net.example, batch)
        key = structure_key(net, example, batch)
        networks = calibration_counts(net.cost.sizes, net.cost.units)
        if any(f"{key} {name}" not in cache.entries for name in networks):
            if say is not None:
                say(f"timing the dense network and {len(networks) - 1} narrower copies on {runtime}")
            copies = [narrowed(net, counts) for counts in networks.values()]
            for name, seconds in zip(networks, timer.models(copies, example)):
                cache.entries[f"{key} {name}"] = seconds
            timer.measured += len(networks)
    finally:
        cache.save()                                   # what was timed stays timed, whatever failed after
    times = [np.array([[cache.entries[s.at(a, b).key(batch)] for b in s.grid()[1]] for a in s.grid()[0]])
             for s in specs]
    wa, wb = width_maps(net.probe.layout, net.probe.dense, net.probe.coef, net.cost.sizes, calls)
    bare = latency_model(specs, times, wa, wb, net.cost.sizes, net.cost.params, timer.identity)
    model = calibrate(bare, {name: cache.entries[f"{key} {name}"] for name in networks}, networks)
    return model, {"entries": len(set(keys)) + len(networks), "measured": timer.measured,
                   "seconds": time.perf_counter() - t0, "runtime": timer.identity}


def measured_latency(dense: nn.Module | None, pruned: nn.Module, example: torch.Tensor, runtime: str, batch: int,
                     threads: int, predicted_s: float, dense_predicted_s: float, budget_s: float = 1.0) -> dict:
    """The pruned and dense models timed in turns on the table's runtime and settings, beside the table's
    predictions: {"runtime", "batch", "dense_ms", "measured_ms", "predicted_ms", "dense_predicted_ms",
    "speedup", "predicted_speedup", "error"} (error: predicted / measured - 1). dense None: the pruned
    model alone, the dense figure being the table's (its measured time when the table was built)."""
    timer = RUNTIMES[runtime](threads, example.device)
    x = random_input(example, batch)
    times = timer.models([pruned] if dense is None else [dense, pruned], x, budget_s)
    dense_s, pruned_s = (dense_predicted_s, times[0]) if dense is None else times
    return {"runtime": timer.identity, "batch": batch, "dense_ms": 1e3 * dense_s, "measured_ms": 1e3 * pruned_s,
            "predicted_ms": 1e3 * predicted_s, "dense_predicted_ms": 1e3 * dense_predicted_s,
            "speedup": dense_s / pruned_s, "predicted_speedup": dense_predicted_s / predicted_s,
            "error": predicted_s / pruned_s - 1.0}


def latency_table(net: Prunable, cfg, root: Path, log: Callable[[str], None] | None = None,
                  world: World = World()) -> LatencyModel:
    """The run's LatencyModel (cfg: a Config with cost=latency), cached under `root`; a failure to time a
    layer is a refusal (UnsupportedModel, one line), never a traceback. Under torchrun rank 0 alone times
    (ranks timing at once would slow each other's timings) and every rank gets its table, or its refusal."""
    built: LatencyModel | str | None = None
    if world.leader:
        try:
            built = _timed_table(net, cfg, root, log)
        except UnsupportedModel as e:
            built = str(e)
    built = world.broadcast(built)
    if isinstance(built, str):
        raise UnsupportedModel(built)
    return built


def _timed_table(net: Prunable, cfg, root: Path, log: Callable[[str], None] | None) -> LatencyModel:
    try:
        model, stats = build_latency(net, cfg.latency_runtime, cfg.latency_batch, cfg.latency_threads,
                                     Path(root) / CACHE_DIR, say=log)
    except UnsupportedModel:
        raise
    except Exception as e:
        raise UnsupportedModel(f"timing the layers on {cfg.latency_runtime} failed ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}): use cost=flops") from None
    if log is not None:
        log(f"latency table on {stats['runtime']}: {stats['entries']} entries, {stats['measured']} timed now "
            f"({stats['seconds']:.1f} s); dense {1e3 * model.dense:.3f} ms at batch {cfg.latency_batch}")
    return model


def record_latency(store, arch: dict, net: Prunable, counts: np.ndarray, cfg, epoch: int) -> None:
    """Time the pruned network against a fresh dense one on the table's runtime and settings (for
    speed_budget_s seconds, or 1 s when the speed timing is off) and store the figures beside the
    table's prediction as a 'latency' event (a failure is recorded instead). A model of
    the user's own has no fresh dense twin: the dense figure is then the one the table was built from."""
    from ..models import build_model
    try:
        dense = None if arch.get("custom") else \
            build_model(arch["model"], arch["num_classes"], arch["image_size"], arch["in_channels"])
        s = measured_latency(dense, net.model, net.example, cfg.latency_runtime, cfg.latency_batch,
                             cfg.latency_threads, net.latency.predict(counts), net.latency.dense,
                             budget_s=cfg.speed_budget_s or 1.0)
    except Exception as e:
        store.event("latency_failed", f"the latency measurement failed ({type(e).__name__}: {e})")
        return
    store.event("latency", f"latency at batch {s['batch']} on {s['runtime']}: measured {s['measured_ms']:.3f} ms "
                           f"({s['speedup']:.2f}x the dense {s['dense_ms']:.3f} ms), predicted {s['predicted_ms']:.3f} "
                           f"ms ({100 * s['error']:+.1f} %)", epoch=epoch, **s)
