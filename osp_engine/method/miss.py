"""Why a sub-network misses its FLOPs target, and what would hit it (docs/method.md, 'When the target is missed').

A cut whose reduction lies more than MISS from the target is explained by one of three causes, tried
in this order on the same scores, so the first one that accounts for the miss is named:

- "search": the variant's threshold search (search="threshold") cuts the saliency order at one
  threshold; the official one even keeps its last probe when none lands within 0.05 pp. The fill
  search on the same scores hits the target: `search=fill`.
- "round_to": every group keeps a multiple of round_to channels; a smaller round_to hits it.
- "granularity": no search can come nearer: the smallest step one unit (a channel, or a unit of a
  chunk or grouped convolution) makes from this cut is too large, or the groups are at their floors.
  What would hit it is a target the network can reach, or a wider network.

Pure: scores and counts in, plain data out; nothing is pruned.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .config import Config
from .flops import CostModel
from .selection import Measure, n_protected, select

MISS = 0.005              # a reduction further than 0.5 percentage points from its target is explained


@dataclass(frozen=True)
class Miss:
    target: float         # fraction of the dense FLOPs the config asked to remove
    reduction: float      # fraction the cut removes
    cause: str            # "search", "round_to" or "granularity"
    reason: str           # which search stopped where, or which granularity held it back
    remedy: str           # what would hit the target
    measured: str = "FLOPs"   # what the target reduces: "FLOPs", or "latency" (cost=latency)

    @property
    def message(self) -> str:
        """One line: 'FLOPs -52.04 % misses the target 50 % by 2.04 pp: <reason>; <remedy>'."""
        off = 100 * abs(self.reduction - self.target)
        return (f"{self.measured} -{100 * self.reduction:.2f} % misses the target {100 * self.target:g} % by {off:.2f} pp: "
                f"{self.reason}; {self.remedy}")

    def as_dict(self) -> dict:
        return asdict(self)


def explain_miss(scores: list[np.ndarray], cost: CostModel, cfg: Config, reduction: float,
                 measure: Measure | None = None) -> Miss | None:
    """None when `reduction` lies within MISS of cfg.target, else why it does not.

    scores: the weighted S^ (per group, (C_g,)) the cut was chosen from; cost: the network's cost model;
    cfg: the search's settings (target, l_max, l_k, variant, round_to, search, cost); measure: what the
    target reduces (selection.select's; None: FLOPs), `reduction` being its reduction."""
    target = cfg.target
    if abs(reduction - target) <= MISS:
        return None
    measure = measure or cost.flops
    named = "latency" if cfg.cost == "latency" else "FLOPs"

    def fill(round_to: int) -> float:
        return select(scores, cost, target, cfg.l_max, cfg.l_k, cfg.variant, round_to, "fill", measure).achieved

    def hits(r: float) -> bool:
        return abs(r - target) <= MISS

    round_to = cfg.kept_multiple
    if cfg.search == "threshold" and round_to <= 1 and hits(filled := fill(0)):
        stop = ("kept its last probe: no probe landed within 0.05 pp of the target" if cfg.variant == "official"
                else "cut the saliency order at the threshold nearest the target")
        return Miss(target, reduction, "search", f"the {cfg.variant} threshold search {stop}, "
                    f"and a cut at one threshold moves by whole channels of large groups",
                    f"search=fill removes {100 * filled:.2f} %", named)
    if round_to > 1:
        for smaller in _smaller(round_to):
            if hits(r := fill(smaller)):
                setting = f"round_to={smaller}" if smaller > 1 else ("round_to=1" if cfg.cost == "latency" else "round_to=0")
                return Miss(target, reduction, "round_to", f"round_to={round_to} lets every group keep only a "
                            f"multiple of {round_to} channels", f"{setting} removes {100 * r:.2f} %", named)
    nearest = fill(0)
    return Miss(target, reduction, "granularity", _coarse(scores, cost, cfg, target, measure),
                f"the nearest reachable is {100 * nearest:.2f} %: set target={nearest:.3f} or use a wider network",
                named)


def _smaller(round_to: int) -> list[int]:
    """The coarseness settings below round_to to try, coarsest first: its halvings, then 0 (off)."""
    out, k = [], round_to // 2
    while k > 1:
        out.append(k)
        k //= 2
    return out + [0]


def _coarse(scores: list[np.ndarray], cost: CostModel, cfg: Config, target: float, measure: Measure) -> str:
    """Which granularity holds the fill search back: the smallest step one unit makes from its cut."""
    chosen = select(scores, cost, target, cfg.l_max, cfg.l_k, cfg.variant, 0, "fill", measure)
    counts = np.array([int(k.sum()) for k in chosen.keep], dtype=np.int64)
    units, at_cut, dense = cost.units.astype(np.int64), float(measure(counts)), float(measure(cost.sizes))
    floors = np.array([n_protected(int(c // u), cfg.l_max, cfg.l_k) for c, u in zip(cost.sizes, units)]) * units
    steps = []
    for g in range(len(counts)):
        for sign in (-1, 1):                          # one unit more pruned, or one unit fewer
            moved = counts.copy()
            moved[g] += sign * units[g]
            if floors[g] <= moved[g] <= cost.sizes[g]:
                steps.append(abs(float(measure(moved)) - at_cut) / dense)
    smallest = f"the smallest step one unit makes from the nearest cut is {100 * min(steps):.2f} pp" if steps \
        else "every group is at its floor or whole"
    chunked = int((units > 1).sum())
    return smallest + (f" ({chunked} groups go in units of several channels)" if chunked else "")
