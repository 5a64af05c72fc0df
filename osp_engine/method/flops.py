"""FLOPs and parameters of any channel assignment, computed from counts (no copies at search time).

Torch-Pruning's counter (`tp.utils.count_ops_and_params`, batch 1, MACs) charges every counted layer
call a product of tensor dimensions and layer attributes (conv: k*C_in*(C_out/groups)*H*W, linear:
numel(input)*out, norms and activations: numel), and every parameter its numel. Under channel
pruning each such dimension is affine in the group counts x = [c_1, ..., c_G] (a concatenation sums
groups, a flatten multiplies one by H*W, a grouped conv divides by its groups), so every charge with
at most two varying factors is a quadratic in x and the model is F(x) = [x, 1]^T Q [x, 1].

The affine maps are read off Torch-Pruning itself: a physically pruned copy loses one unit of one
group at a time, and the change of every dimension is that group's coefficient (probe.py, which also
keeps whole the groups whose removal breaks the model). Nothing is assumed
about the architecture; `check_cost_model` then compares F against the counter on randomly pruned
copies and names the layers it could not cost. Coefficients may be fractions
(a grouped conv's C_out/groups), so Q holds `scale` times the counts, exactly, in int64.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import lcm, prod
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .groups import UnsupportedModel, unit_index
from .tp import tp

if TYPE_CHECKING:
    from .probe import Probe

_COUNTER = tp.utils.op_counter


@dataclass(frozen=True)
class CostModel:
    """flops_q, params_q: (G+1, G+1) int64 holding scale * the forms; index G is the constant 1.

    sizes: (G,) dense channel counts; units: (G,) channels per removable unit (counts move in units);
    blocked: (G,) bool, units laid out as contiguous blocks rather than interleaved (groups.unit_index).
    """
    flops_q: np.ndarray
    params_q: np.ndarray
    sizes: np.ndarray
    units: np.ndarray
    blocked: np.ndarray
    scale: int = 1
    layers: tuple = field(default=(), compare=False, repr=False)   # (name, type, sparse form) per charge

    def unit_index(self, g: int) -> np.ndarray:
        """(C_g,) int64: the unit of each channel of group g."""
        return unit_index(int(self.sizes[g]), int(self.units[g]), bool(self.blocked[g]))

    def _eval(self, q: np.ndarray, counts: np.ndarray) -> np.ndarray:
        c = np.atleast_2d(np.asarray(counts, dtype=np.int64))                  # (B, G)
        x = np.concatenate([c, np.ones((c.shape[0], 1), dtype=np.int64)], 1)   # (B, G+1)
        return np.einsum("bi,ij,bj->b", x, q, x) // self.scale

    def flops(self, counts) -> np.ndarray | int:
        """Multiply-accumulates for counts (G,) -> int, or (B, G) -> (B,) int64."""
        out = self._eval(self.flops_q, counts)
        return int(out[0]) if np.ndim(counts) == 1 else out

    def params(self, counts) -> np.ndarray | int:
        out = self._eval(self.params_q, counts)
        return int(out[0]) if np.ndim(counts) == 1 else out

    @property
    def dense_flops(self) -> int:
        return self.flops(self.sizes)

    @property
    def dense_params(self) -> int:
        return self.params(self.sizes)

    def cost_per_channel(self) -> np.ndarray:
        """cost_g: FLOPs saved per channel removed from g alone (all but one unit removed, / channels removed)."""
        dense = self.dense_flops
        out = np.zeros(len(self.sizes), dtype=np.float64)
        for g, (c, u) in enumerate(zip(self.sizes, self.units)):
            if c > u:
                counts = self.sizes.copy()
                counts[g] = u
                out[g] = (dense - self.flops(counts)) / (c - u)
        return out


# ------------------------------------------------------------------ what the counter charges, as factors
def _conv(m, inp, out):
    k, spatial = prod(m.kernel_size), list(out.shape[2:])
    terms = [[k, inp[0].shape[0], *spatial, m.in_channels, m.out_channels // m.groups]]
    return terms + ([[inp[0].shape[0], *spatial, m.out_channels]] if m.bias is not None else [])


def _linear(m, inp, out):
    return [[*inp[0].shape, out.shape[-1]]] + ([[out.shape[-1]]] if m.bias is not None else [])


def _norm(m, inp, out):
    affine = m.elementwise_affine if isinstance(m, nn.LayerNorm) else m.affine
    return [[2 if affine else 1, *inp[0].shape]]


FACTORS = {                      # counter hook -> the factors of each charge it makes (same formulas)
    _COUNTER.conv_flops_counter_hook: _conv,
    _COUNTER.linear_flops_counter_hook: _linear,
    _COUNTER.relu_flops_counter_hook: lambda m, inp, out: [list(out.shape)],
    _COUNTER.pool_flops_counter_hook: lambda m, inp, out: [list(inp[0].shape)],
    _COUNTER.bn_flops_counter_hook: _norm,
    _COUNTER.ln_flops_counter_hook: _norm,
    _COUNTER.upsample_flops_counter_hook: lambda m, inp, out: [[out[0].numel()]],
    _COUNTER.empty_flops_counter_hook: lambda m, inp, out: [],
}


def count_subclasses(model: nn.Module) -> None:
    """Teach Torch-Pruning's counter the subclasses of counted layers that `model` uses (timm's
    Conv2dSame, ScaledStdConv2d, BatchNormAct2d, ...), each with its nearest counted base class's rule.

    The counter looks layers up by their exact type and would charge such a layer nothing: the FLOPs
    of a network built from them would leave out most of its convolutions. This adds entries to the
    counter's table (never changes one), so every later count, ours and the checks', charges them."""
    for m in model.modules():
        kind = type(m)
        if kind in _COUNTER.MODULES_MAPPING:
            continue
        base = next((b for b in kind.__mro__[1:] if b in _COUNTER.MODULES_MAPPING), None)
        if base is not None:
            _COUNTER.MODULES_MAPPING[kind] = _COUNTER.MODULES_MAPPING[base]


def counted_layers(model: nn.Module) -> list[nn.Module]:
    """The layers the counter charges, outermost first: a counted layer, not its sub-layers."""
    found: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        if type(m) in _COUNTER.MODULES_MAPPING or type(m) in _COUNTER.CUSTOM_MODULES_MAPPING:
            found.append(m)
        else:
            for child in m.children():
                visit(child)

    visit(model)
    return found


def output_shapes(out) -> list:
    """The shapes of a forward's output, leaf by leaf in a fixed order: a tensor, or tuples, lists and
    dicts of them (a dict's keys sorted); anything else is named by its type, so a change shows."""
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, (tuple, list)):
        return [s for v in out for s in output_shapes(v)]
    if isinstance(out, dict):
        return [s for k in sorted(out, key=str) for s in output_shapes(out[k])]
    return [type(out).__name__]


def observe(model: nn.Module, example: torch.Tensor) -> tuple[list, list, list]:
    """One batch-1 forward: per counted call (name, type, [factor lists]); per parameter its shape; the
    output's shapes (`output_shapes`)."""
    names = {m: n for n, m in model.named_modules()}
    calls: list = []

    def hook(m, inp, out):
        rule = FACTORS.get(_COUNTER.MODULES_MAPPING.get(type(m)))
        if rule is None or type(m) in _COUNTER.CUSTOM_MODULES_MAPPING:
            raise UnsupportedModel(f"the FLOPs model cannot cost {type(m).__name__} layers ({names[m]})")
        calls.append((names[m], type(m).__name__, rule(m, inp, out)))

    hooks = [m.register_forward_hook(hook) for m in counted_layers(model)]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    shapes = [(n, "parameter", [list(p.shape)]) for n, p in model.named_parameters()]
    return calls, shapes, output_shapes(out)


def flat(obs: list) -> list[int]:
    """Every factor of every charge of `observe`'s lists, in order."""
    return [int(f) for _, _, terms in obs for term in terms for f in term]


def _affine(value: int, coef: dict[int, Fraction], sizes: np.ndarray, one: int) -> dict[int, Fraction]:
    """The factor as a sparse vector over x = [c, 1]: value + sum_g a_g (c_g - C_g)."""
    vec = {g: a for g, a in coef.items()}
    vec[one] = Fraction(value) - sum((a * int(sizes[g]) for g, a in coef.items()), Fraction(0))
    return vec


def _form(terms: list[list[int]], start: int, dense, coef, sizes, one: int, where: str) -> dict:
    """The sparse quadratic {(i, j): Fraction} of one call's (or parameter's) charges, factors from `start`."""
    out: dict = {}
    i = start
    for term in terms:
        idx = list(range(i, i + len(term)))
        i += len(term)
        varying = [k for k in idx if coef[k]]
        if len(varying) > 2:
            raise UnsupportedModel(f"the FLOPs model cannot cost {where}: its count grows with more than "
                                   f"two channel counts")
        const = prod(int(dense[k]) for k in idx if k not in varying)
        vecs = [_affine(int(dense[k]), coef[k], sizes, one) for k in varying] + [{one: Fraction(1)}] * (2 - len(varying))
        for a, va in vecs[0].items():
            for b, vb in vecs[1].items():
                out[(a, b)] = out.get((a, b), Fraction(0)) + const * va * vb
    return out


def _dense_matrix(form: dict, n: int, scale: int) -> np.ndarray:
    q = np.zeros((n, n), dtype=np.int64)
    for (a, b), v in form.items():
        scaled = v * scale
        if scaled.denominator != 1 or abs(scaled.numerator) >= 2 ** 62:
            raise UnsupportedModel("the FLOPs model's coefficients do not fit in 64-bit integers")
        q[a, b] += int(scaled)
    return q


def cost_model(probe: "Probe") -> CostModel:
    """The quadratic forms for FLOPs and params over the probed model's prunable groups (probe.py)."""
    groups = probe.prunable
    sizes = np.array([g.size for g in groups], dtype=np.int64)
    one, i, layers = len(groups), 0, []
    for name, kind, terms in probe.layout:
        n_factors = sum(len(t) for t in terms)
        layers.append((name, kind, _form(terms, i, probe.dense, probe.coef, sizes, one, f"{kind} layers ({name})")))
        i += n_factors
    flops, params = _sum([f for _, k, f in layers if k != "parameter"]), _sum([f for _, k, f in layers if k == "parameter"])
    scale = 1
    for v in list(flops.values()) + list(params.values()):
        scale = lcm(scale, v.denominator)
    units = np.array([g.unit for g in groups], dtype=np.int64)
    blocked = np.array([g.blocked for g in groups], dtype=bool)
    return CostModel(_dense_matrix(flops, one + 1, scale), _dense_matrix(params, one + 1, scale), sizes, units, blocked,
                     scale, tuple(layers))


def _sum(forms: list[dict]) -> dict:
    total: dict = {}
    for form in forms:
        for key, v in form.items():
            total[key] = total.get(key, Fraction(0)) + v
    return total


def _values(cost: CostModel, counts: np.ndarray, parameters: bool) -> list[tuple[str, str, Fraction]]:
    x = [int(c) for c in counts] + [1]
    return [(name, kind, sum((v * x[a] * x[b] for (a, b), v in form.items()), Fraction(0)))
            for name, kind, form in cost.layers if (kind == "parameter") == parameters]


def layer_flops(cost: CostModel, counts: np.ndarray) -> list[tuple[str, str, Fraction]]:
    """(layer name, layer type, FLOPs) of every counted call at `counts`: where a check points its finger."""
    return _values(cost, counts, parameters=False)


def parameter_sizes(cost: CostModel, counts: np.ndarray) -> dict[str, Fraction]:
    """{parameter name: elements} at `counts`."""
    return {name: value for name, _, value in _values(cost, counts, parameters=True)}
