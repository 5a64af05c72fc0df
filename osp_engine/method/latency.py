"""Latency as the search's cost (cost=latency): a table of each layer's time at a grid of its widths.

Every convolution and linear layer the FLOPs counter charges (flops.py) is a row of the table. Its
time depends on two widths, a = its input channels and b = its output channels per group (a linear
layer's in and out features): the two factors of its charge that channel pruning moves. Both are
affine in the group counts (the probe read the maps, probe.py), so for counts c (G,)

    latency(c) = scale * sum_l T_l(a_l(c), b_l(c)) + per_param * params(c) + rest

where T_l is layer l timed alone on the deploy runtime at a K x K grid of (a, b), interpolated
bilinearly between grid points. A layer runs at another speed in its network than alone: its
weights come from memory instead of a cache warm from the run before (VGG-16's late layers, 512
channels at 4x4, are bound by it), the runtime works between nodes, and the network runs more than the
table holds (pooling, residual additions). `scale`, `per_param` (seconds per weight, params(c) from the
FLOPs form's parameter count) and `rest` account for it, fitted by least squares to whole networks
timed on the runtime (`calibrate`, `calibration_counts`): the dense one, every group at half its
channels, and the first or the last half of the groups at half; docs/method.md, 'Latency as the cost',
says where prediction and measurement can part.

Pure: the widths to time (`LayerSpec.grid`) go out, seconds come back (running/latency.py times
them); `LatencyModel.predict` sums table entries and never times a network.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable

import numpy as np
from torch import nn

from .groups import UnsupportedModel
from .selection import kept_step, round_pruned

FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)   # grid points per width, as fractions of the dense width


@dataclass(frozen=True)
class LayerSpec:
    """One call of a convolution (kind "conv") or linear layer ("linear") as a runtime times it alone.

    a, b: the dense widths (conv: in channels, out channels per group; linear: in, out features);
    rows: a linear layer's input rows, (H, W) a convolution's input size; groups: "one", "depthwise"
    (one group per input channel: the groups follow a) or "fixed" (groups stay `n_groups`)."""
    name: str
    kind: str
    a: int
    b: int
    hw: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: str = "one"
    n_groups: int = 1
    bias: bool = True
    rows: int = 1

    def at(self, a: int, b: int) -> "LayerSpec":
        """The same layer at widths (a, b); a fixed-groups convolution keeps a a multiple of its groups."""
        if self.groups == "fixed":
            a = max(self.n_groups, a // self.n_groups * self.n_groups)
        return replace(self, a=int(a), b=int(b))

    @property
    def conv_groups(self) -> int:
        return {"one": 1, "depthwise": self.a, "fixed": self.n_groups}[self.groups]

    def key(self, batch: int) -> str:
        """What fixes the layer's time on a runtime: the cache's key."""
        shape = f"{self.kind} a{self.a} b{self.b} g{self.conv_groups} hw{self.hw} k{self.kernel} s{self.stride}"
        return f"{shape} p{self.padding} d{self.dilation} bias{int(self.bias)} rows{self.rows} n{batch}"

    def grid(self) -> tuple[list[int], list[int]]:
        """The widths a and b are timed at (ascending, each at least 1)."""
        return _grid(self.a), _grid(self.b)


def _grid(width: int) -> list[int]:
    return sorted({max(1, round(f * width)) for f in FRACTIONS})


def layer_spec(name: str, module: nn.Module, input_shape: tuple[int, ...]) -> LayerSpec:
    """The spec of one call of `module` on an input of `input_shape` (batch 1); UnsupportedModel for a
    layer the latency table cannot time alone."""
    if isinstance(module, nn.Linear):
        rows = int(np.prod(input_shape[:-1])) if len(input_shape) > 1 else 1
        return LayerSpec(name, "linear", module.in_features, module.out_features, bias=module.bias is not None,
                         rows=rows)
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        if isinstance(padding, str):                # "valid" or "same" (stride 1): the pads torch uses
            padding = tuple(0 if padding == "valid" else d * (k - 1) // 2
                            for k, d in zip(module.kernel_size, module.dilation))
        g, a = module.groups, module.in_channels
        kind = "one" if g == 1 else ("depthwise" if g == a else "fixed")
        return LayerSpec(name, "conv", a, module.out_channels // g, tuple(input_shape[-2:]), module.kernel_size,
                         module.stride, tuple(padding), module.dilation, kind, g, module.bias is not None)
    raise UnsupportedModel(f"cost=latency cannot time {type(module).__name__} layers ({name}) alone: it times "
                           f"Conv2d and Linear layers; use cost=flops")


@dataclass(frozen=True)
class LatencyModel:
    """latency(counts) in seconds on one runtime, from the table (module docstring).

    width_a, width_b: (L, G+1) float64 affine maps, counts [c, 1] -> each layer's widths; grid_a, grid_b:
    (L, K) ascending widths (a layer with fewer distinct points repeats its last one); table: (L, K, K)
    seconds; scale, per_param, rest: the fit to whole networks (`calibrate`); params: the network's
    parameter count of the counts (CostModel.params); runtime: where it was measured."""
    width_a: np.ndarray
    width_b: np.ndarray
    grid_a: np.ndarray
    grid_b: np.ndarray
    table: np.ndarray
    sizes: np.ndarray
    params: Callable[[np.ndarray], "int | np.ndarray"]
    runtime: str
    scale: float = 1.0
    per_param: float = 0.0
    rest: float = 0.0

    def predict(self, counts) -> np.ndarray | float:
        """Seconds for counts (G,) -> float, or (B, G) -> (B,)."""
        out = self.scale * self.table_sum(counts) + self.per_param * np.asarray(self.params(np.atleast_2d(counts)),
                                                                                dtype=np.float64) + self.rest
        return float(out[0]) if np.ndim(counts) == 1 else out

    def table_sum(self, counts) -> np.ndarray:
        """(B,) seconds: the table's layers alone, summed, for counts (G,) or (B, G)."""
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        x = np.concatenate([c, np.ones((c.shape[0], 1))], 1)                 # (B, G+1)
        a, b = x @ self.width_a.T, x @ self.width_b.T                        # (B, L) widths
        ia, ta = _cell(self.grid_a, a)
        ib, tb = _cell(self.grid_b, b)
        layer = np.arange(self.table.shape[0])[None, :]

        def at(i, j):
            return self.table[layer, i, j]                                   # (B, L)

        t = (at(ia, ib) * (1 - ta) * (1 - tb) + at(ia + 1, ib) * ta * (1 - tb)
             + at(ia, ib + 1) * (1 - ta) * tb + at(ia + 1, ib + 1) * ta * tb)
        return np.maximum(t, 0.0).sum(1)

    @property
    def dense(self) -> float:
        """The dense model's latency: its measured time, by construction of `calibrate`."""
        return self.predict(self.sizes)


def calibration_counts(sizes: np.ndarray, units: np.ndarray, multiple: int = 8) -> dict[str, np.ndarray]:
    """The whole networks `calibrate` is fitted to, as counts (G,): "dense"; "half", every group at half its
    units; "early half" and "late half", the first or the last half of the groups (in the probe's order,
    the forward pass's) at half; each kept count rounded up to a multiple of `multiple` channels (the
    widths the table is timed at)."""
    total = sizes // units
    half = (total - round_pruned(total // 2, total, kept_step(units, multiple))) * units
    early = np.arange(len(sizes)) < len(sizes) // 2
    return {"dense": sizes.copy(), "half": half, "early half": np.where(early, half, sizes),
            "late half": np.where(early, sizes, half)}


def calibrate(model: LatencyModel, measured: dict[str, float], counts: dict[str, np.ndarray]) -> LatencyModel:
    """`model` with scale, per_param and rest fitted by least squares to the whole networks' `measured`
    seconds at `counts` (calibration_counts). A negative per_param is dropped (scale and rest fitted
    alone); where scale would still not be positive, rest is 0 and scale the dense network's measured
    time over the table's sum."""
    names = list(counts)
    y = np.array([measured[n] for n in names])
    table = np.array([float(model.table_sum(counts[n])[0]) for n in names])
    params = np.array([float(model.params(counts[n])) for n in names])
    for columns in ((table, params), (table,)):
        a = np.stack([*columns, np.ones(len(names))], 1)                   # (N, k + 1)
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        if coef[0] > 0 and (len(columns) == 1 or coef[1] >= 0):
            per_param = float(coef[1]) if len(columns) == 2 else 0.0
            return replace(model, scale=float(coef[0]), per_param=per_param, rest=float(coef[-1]))
    return replace(model, scale=measured["dense"] / table[names.index("dense")], per_param=0.0, rest=0.0)


def _cell(grid: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, L) the grid cell holding each width (its lower index, in [0, K-2]) and the position t within it
    (0 at the lower point, 1 at the upper; below the grid, t < 0 extrapolates the first cell; a cell of
    zero length gives t = 0)."""
    k = grid.shape[1]
    i = np.clip((grid[None] < width[..., None]).sum(-1) - 1, 0, max(k - 2, 0))   # (B, L)
    rows = np.arange(grid.shape[0])[None, :]
    lo, hi = grid[rows, i], grid[rows, np.minimum(i + 1, k - 1)]
    span = hi - lo
    t = np.divide(width - lo, span, out=np.zeros_like(width), where=span > 0)
    return i, t


def width_maps(layout: list, dense: np.ndarray, coef: list[dict[int, Fraction]], sizes: np.ndarray,
               calls: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(L, G+1) each, the affine maps [c, 1] -> widths a and b (the last two factors of a call's first
    charge, flops.FACTORS' conv and linear rules) of the layout's calls at indices `calls`. A factor is
    dense[f] + sum_g coef[f][g] * (c_g - C_g) (probe.py's Probe)."""
    starts, i = [], 0
    for _, _, terms in layout:
        starts.append(i)
        i += sum(len(t) for t in terms)
    n = len(sizes)
    maps = np.zeros((2, len(calls), n + 1))
    for row, call in enumerate(calls):
        first = len(layout[call][2][0])
        for which, f in enumerate((starts[call] + first - 2, starts[call] + first - 1)):
            maps[which, row, n] = float(dense[f])
            for g, v in coef[f].items():
                maps[which, row, g] = float(v)
                maps[which, row, n] -= float(v) * int(sizes[g])
    return maps[0], maps[1]


def latency_model(specs: list[LayerSpec], times: list[np.ndarray], width_a: np.ndarray, width_b: np.ndarray,
                  sizes: np.ndarray, params: Callable, runtime: str) -> LatencyModel:
    """The uncalibrated model (the table's sum alone) from each layer's times, (len(grid a), len(grid b)) seconds."""
    k = max(max(len(g) for g in s.grid()) for s in specs)
    grid_a, grid_b = np.zeros((len(specs), k)), np.zeros((len(specs), k))
    table = np.zeros((len(specs), k, k))
    for l, (spec, t) in enumerate(zip(specs, times)):
        ga, gb = spec.grid()
        grid_a[l] = ga + [ga[-1]] * (k - len(ga))
        grid_b[l] = gb + [gb[-1]] * (k - len(gb))
        padded = np.pad(t, ((0, k - len(ga)), (0, k - len(gb))), mode="edge")
        table[l] = padded
    return LatencyModel(width_a, width_b, grid_a, grid_b, table, sizes, params, runtime)


def check_no_other_widths(layout: list, coef: list, calls: set[int]) -> None:
    """UnsupportedModel if a counted call outside the table (not a Conv2d or Linear) is a convolution-like
    layer whose cost moves with the counts: its time would be missing from the prediction."""
    i = 0
    for index, (name, kind, terms) in enumerate(layout):
        n = sum(len(t) for t in terms)
        if kind != "parameter" and index not in calls and "Conv" in kind and any(coef[f] for f in range(i, i + n)):
            raise UnsupportedModel(f"cost=latency cannot time {kind} layers ({name}): it times Conv2d and Linear "
                                   f"layers; use cost=flops")
        i += n
