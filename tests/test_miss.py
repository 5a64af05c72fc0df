"""A target met, or its miss explained: the fill search, `explain_miss` on exact cost models and seeded
scores, and a real run that cannot meet its target saying why in `show --json`, on its card and in its report."""
import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from osp_engine import get_preset
from osp_engine.interfaces.cli import main as cli
from osp_engine.method.config import Config, ConfigError
from osp_engine.method.miss import MISS, Miss, explain_miss
from osp_engine.method.network import prepare_network
from osp_engine.method.selection import kept_step, n_protected, round_pruned, select
from osp_engine.models import build_model
from osp_engine.storage.reader import RunReader, list_runs


@pytest.fixture(scope="module")
def demo_net():
    """The demo's network (digits-resnet8): six groups of 16-64 channels, its exact cost model and pi."""
    model = build_model("digits-resnet8", 10, 8, 1)
    return prepare_network(model, 10, torch.zeros(1, 1, 8, 8), "official", 0)


def _scores(net, seed: int) -> list[np.ndarray]:
    """Seeded weighted saliency, one (C_g,) array per group (numpy's generator: the same on every CPU)."""
    rng = np.random.default_rng(seed)
    return [rng.lognormal(0.0, 1.0, size=int(c)) for c in net.cost.sizes]


def _cfg(**changes) -> Config:
    return dataclasses.replace(Config(), **{"target": 0.5, "l_max": 0.75, "l_k": 1.0, **changes})


def test_the_fill_search_lands_within_tolerance_where_the_threshold_search_misses(demo_net):
    cost = demo_net.cost
    misses = 0
    for seed in range(40):
        scores = _scores(demo_net, seed)
        filled = select(scores, cost, 0.5, 0.75, 1.0, "official", 0, "fill")
        assert abs(filled.reduction - 0.5) <= MISS
        assert filled.flops == cost.flops(np.array([k.sum() for k in filled.keep]))
        misses += abs(select(scores, cost, 0.5, 0.75, 1.0, "official").reduction - 0.5) > MISS
        for g, (s, keep) in enumerate(zip(scores, filled.keep)):      # each group loses its lowest scores only
            assert keep.sum() >= n_protected(len(s), 0.75, 1.0)
            if not keep.all():
                assert s[~keep].max() <= s[keep].min()
    assert misses > 0                                                 # the case being fixed does occur


def test_a_cut_within_half_a_point_needs_no_explanation(demo_net):
    assert explain_miss(_scores(demo_net, 0), demo_net.cost, _cfg(), 0.5 + 0.0049) is None
    assert explain_miss(_scores(demo_net, 0), demo_net.cost, _cfg(), 0.5 - 0.0049) is None


def test_a_threshold_search_miss_names_the_search_and_the_fill_figure(demo_net):
    cost = demo_net.cost
    for variant in ("official", "corrected"):
        seed = next(s for s in range(200) if abs(select(_scores(demo_net, s), cost, 0.5, 0.75, 1.0, variant).reduction
                                                 - 0.5) > MISS)
        scores = _scores(demo_net, seed)
        cut = select(scores, cost, 0.5, 0.75, 1.0, variant).reduction
        miss = explain_miss(scores, cost, _cfg(variant=variant), cut)
        filled = select(scores, cost, 0.5, 0.75, 1.0, variant, 0, "fill").reduction
        assert (miss.cause, miss.remedy) == ("search", f"search=fill removes {100 * filled:.2f} %")
        assert f"the {variant} threshold search" in miss.reason
        assert miss.message.startswith(f"FLOPs -{100 * cut:.2f} % misses the target 50 % by "
                                       f"{100 * abs(cut - 0.5):.2f} pp: ")


def test_a_round_to_miss_names_the_largest_round_to_that_hits(demo_net):
    cost = demo_net.cost
    scores = _scores(demo_net, 1)
    cut = select(scores, cost, 0.5, 0.75, 1.0, "official", 16).reduction
    assert abs(cut - 0.5) > MISS                                      # 16-64 channel groups in steps of 16
    miss = explain_miss(scores, cost, _cfg(round_to=16), cut)
    assert miss.cause == "round_to" and "multiple of 16 channels" in miss.reason
    hits = {k: select(scores, cost, 0.5, 0.75, 1.0, "official", k, "fill").reduction for k in (8, 4, 2, 0)}
    first = next(k for k in (8, 4, 2, 0) if abs(hits[k] - 0.5) <= MISS)
    assert miss.remedy == f"round_to={first} removes {100 * hits[first]:.2f} %"


def test_a_network_too_coarse_for_any_search_says_its_smallest_step():
    """Two groups of 2 and 3 channels: every channel is a large share of the FLOPs, whatever the search."""
    from test_math import TwoConv

    net = prepare_network(TwoConv(), 4, torch.zeros(1, 1, 2, 2), "official", 0)
    scores = [np.array([1.0, 2.0]), np.array([3.0, 1.0, 2.0])]
    cfg = _cfg(target=0.4, search="fill")
    cut = select(scores, net.cost, 0.4, 0.75, 1.0, "official", 0, "fill").reduction
    assert abs(cut - 0.4) > MISS
    miss = explain_miss(scores, net.cost, cfg, cut)
    assert miss.cause == "granularity" and "the smallest step one unit makes from the nearest cut is" in miss.reason
    assert miss.remedy == f"the nearest reachable is {100 * cut:.2f} %: set target={cut:.3f} or use a wider network"
    assert Miss(**miss.as_dict()) == miss                             # plain data: a checkpoint and an event hold it


def test_an_unknown_search_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown search 'nearest': use threshold"):
        dataclasses.replace(get_preset("demo"), search="nearest").validate()


def _gap_target(net, round_to: int) -> float:
    """A target as far as possible from every reduction `round_to` lets the demo's network reach (each
    group kept at a multiple of round_to channels, or whole, above its floor): a run misses it by at
    least half that gap, whatever its training decides."""
    cost = net.cost
    options = []
    for c in cost.sizes:
        free = int(c) - n_protected(int(c), 0.75, 1.0)
        step = kept_step(np.array([1]), round_to)
        options.append(sorted({int(c - round_pruned(np.array([p]), np.array([c]), step)[0]) for p in range(free + 1)}))
    reachable = sorted({1 - cost.flops(np.array(kept)) / cost.dense_flops for kept in itertools.product(*options)})
    gaps = [(b - a, (a + b) / 2) for a, b in zip(reachable, reachable[1:]) if b < 0.9]
    width, middle = max(gaps)
    assert width > 4 * MISS, gaps
    return round(middle, 4)


def test_a_run_that_misses_says_why_in_show_on_its_card_and_in_its_report(demo_net, tmp_path, capsys, monkeypatch):
    target = _gap_target(demo_net, 16)
    short = ["epochs=8", "sl_start=1", "sl_end=4", "round_to=16", f"target={target}", "speed_budget_s=0",
             "keep_checkpoints=0"]
    assert cli(["run", "--preset", "demo", "--runs-dir", str(tmp_path), *[a for s in short for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    (run,) = list_runs(tmp_path)
    assert cli(["show", run.run_id, "--runs-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    miss = shown["target_miss"]
    assert abs(shown["flops_reduction"] - target) > MISS and miss["reduction"] == pytest.approx(shown["flops_reduction"])
    assert miss["cause"] == "round_to" and miss["remedy"].startswith("round_to=")
    assert miss["message"] == Miss(**{k: miss[k] for k in ("target", "reduction", "cause", "reason", "remedy")}).message
    assert miss["message"] in out                                      # the command line's last word on the run
    # it is the explanation of the stored prune: recomputed from the saliency of t* it is the same
    r = RunReader(run.dir)
    t_star = r.info()["t_star"]
    from osp_engine.method import saliency as sal
    again = explain_miss(sal.weighted_saliency(r.saliency(t_star), demo_net.pi), demo_net.cost,
                         dataclasses.replace(get_preset("demo"), round_to=16, target=target), miss["reduction"])
    assert again.as_dict() == {k: miss[k] for k in ("target", "reduction", "cause", "reason", "remedy", "measured")}
    # the run card (Runs page) and the report say it too
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path))
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60)
    at.session_state["runs_compact"] = False
    at.run()
    assert not at.exception
    assert any("misses the target" in m.value and "round\\_to=" in m.value for m in at.markdown)
    from osp_engine.charts.report import card_rows
    assert ("target missed", miss["message"]) in card_rows(r.summary(), r.info())
