"""round_to=k: every group keeps a multiple of k channels (or all), the target still met by the counter."""
import numpy as np
import pytest
import torch

from osp_engine import get_preset
from osp_engine.method import saliency as sal
from osp_engine.method.config import ConfigError, apply_overrides
from osp_engine.method.costcheck import pruned_copy
from osp_engine.method.network import check_target, max_reduction, prepare_network
from osp_engine.method.selection import kept_step, round_pruned, select
from osp_engine.method.tp import tp
from osp_engine.models import build_model
from osp_engine.running.run import Run
from osp_engine.storage.reader import RunReader


def test_rounding_keeps_multiples_or_everything():
    assert kept_step(np.array([1, 2, 4, 3, 16]), 8).tolist() == [8, 4, 2, 8, 1]      # in units of each group
    assert kept_step(np.array([1, 2]), 0).tolist() == [1, 1]
    total, step = np.array([64, 64, 20, 6, 16]), np.array([8, 8, 8, 8, 1])
    assert round_pruned(np.array([10, 0, 13, 3, 5]), total, step).tolist() == [8, 0, 12, 0, 5]
    assert round_pruned(np.array([56, 63, 19, 5, 15]), total, step).tolist() == [56, 56, 12, 0, 15]
    for n in range(65):                         # monotone: pruning more before rounding never prunes less
        assert round_pruned(np.array([n]), np.array([64]), np.array([8]))[0] == (n // 8) * 8


@pytest.mark.parametrize("name,size", [("resnet56", 32), ("tv-resnet18", 64)])
@pytest.mark.parametrize("variant", ["official", "corrected"])
def test_round_to_8_keeps_multiples_of_8_and_meets_the_target(name, size, variant):
    torch.manual_seed(0)
    model = build_model(name, 10, size, 3).eval()
    example = torch.randn(1, 3, size, size)
    net = prepare_network(model, 10, example, variant, checks=1)
    scores = sal.weighted_saliency(sal.all_saliency(net.groups), net.pi)
    plain = select(scores, net.cost, 0.5, 0.75, 1.0, variant)
    chosen = select(scores, net.cost, 0.5, 0.75, 1.0, variant, round_to=8)
    kept = [int(k.sum()) for k in chosen.keep]
    assert all(n % 8 == 0 or n == g.size for n, g in zip(kept, net.groups)), kept
    assert any(int(k.sum()) % 8 for k in plain.keep)                       # without it, widths are anything
    dense, _ = tp.utils.count_ops_and_params(model, example)
    pruned, _ = tp.utils.count_ops_and_params(pruned_copy(model, net.groups, chosen.keep, example), example)
    assert int(pruned) == chosen.flops and abs((1 - pruned / dense) - 0.5) <= 0.005, 1 - pruned / dense
    for k, p in zip(chosen.keep, plain.keep):   # each group prunes its lowest-ranked channels: a subset of the cut
        assert not (k & ~p).any() or k.sum() > p.sum()
    assert max_reduction(net, 0.75, 1.0, 8) <= max_reduction(net, 0.75, 1.0)


def test_a_run_with_round_to_finishes_and_records_it(tmp_path):
    cfg = apply_overrides(get_preset("demo"), ["epochs=9", "sl_start=1", "sl_end=6", "reg=0.02", "reg_delta=0.02",
                                               "round_to=8"])
    run = Run(cfg, tmp_path)
    assert run.execute() == "finished", run.error
    summary = RunReader(run.dir).summary()
    # six groups of 16-64 channels: one block of 8 channels is 1.5-6 % of this tiny network's FLOPs
    assert summary["round_to"] == 8 and abs(summary["flops_reduction"] - 0.5) <= 0.04
    model = torch.load(run.dir / "model.pt", weights_only=True)["state_dict"]
    widths = {name: w.shape[0] for name, w in model.items() if name.endswith(".weight") and w.dim() == 4}
    assert all(c % 8 == 0 for c in widths.values()), widths
    with pytest.raises(ConfigError, match="round_to must be >= 0"):
        apply_overrides(cfg, ["round_to=-1"]).validate()


def test_an_unreachable_rounded_target_is_refused_with_the_reachable_one():
    model = build_model("resnet56", 10, 32, 3).eval()
    net = prepare_network(model, 10, torch.randn(1, 3, 32, 32), "official", checks=0)
    top = max_reduction(net, 0.75, 1.0, 16)
    check_target(net, top, 0.75, 1.0, 16)
    with pytest.raises(Exception, match=r"cannot be reached: at most .* round_to=16\)"):
        check_target(net, top + 0.01, 0.75, 1.0, 16)
