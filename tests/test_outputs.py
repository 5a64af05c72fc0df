"""Models whose output is not logits (a detector's boxes and scores): the groups whose channels reach an
output are kept whole, every other group prunes exactly, and attach runs the cycle on them."""

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from osp_engine import attach
from osp_engine.method.config import ConfigError
from osp_engine.method.costcheck import pruned_copy, random_keep
from osp_engine.method.flops import output_shapes
from osp_engine.method.network import prepare_network
from osp_engine.method.probecopy import CHANGED_OUTPUT
from osp_engine.storage.reader import RunReader


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TwoHeads(nn.Module):
    """A backbone of two stages and, at each stage, a box head (4 values per cell) and a score head
    (`classes` per cell), returned as {"boxes": [P1, P2], "scores": [P1, P2]}; with `flat`, one (N, A, 4 +
    classes) tensor of every cell instead, as a detector's decoded output."""

    def __init__(self, classes: int = 3, flat: bool = False) -> None:
        super().__init__()
        self.flat = flat
        self.stem, self.stage1, self.stage2 = block(1, 16), block(16, 24, 2), block(24, 32, 2)
        self.box = nn.ModuleList([nn.Sequential(block(c, 16), nn.Conv2d(16, 4, 1)) for c in (24, 32)])
        self.score = nn.ModuleList([nn.Sequential(block(c, 16), nn.Conv2d(16, classes, 1)) for c in (24, 32)])

    def forward(self, x):
        p1 = self.stage1(self.stem(x))                     # (N, 24, H/2, W/2)
        p2 = self.stage2(p1)                               # (N, 32, H/4, W/4)
        boxes = [head(p) for head, p in zip(self.box, (p1, p2))]
        scores = [head(p) for head, p in zip(self.score, (p1, p2))]
        if not self.flat:
            return {"boxes": boxes, "scores": scores}
        cells = [torch.cat((b, s), 1).flatten(2) for b, s in zip(boxes, scores)]   # (N, 4 + classes, cells)
        return torch.cat(cells, 2).transpose(1, 2)                                 # (N, A, 4 + classes)


EXAMPLE = torch.randn(1, 1, 16, 16)
HEAD_OUTPUTS = {"box.0.1", "box.1.1", "score.0.1", "score.1.1"}          # the last conv of each head


@pytest.mark.parametrize("flat", [False, True])
def test_the_heads_last_convolutions_are_kept_whole_and_the_rest_prunes_exactly(flat):
    torch.manual_seed(0)
    model = TwoHeads(flat=flat).eval()
    dense = output_shapes(model(EXAMPLE))
    net = prepare_network(model, None, EXAMPLE, "corrected", checks=2)
    whole = {k.name: k.reason for k in net.whole}
    assert set(whole.values()) == {CHANGED_OUTPUT}
    # flat: the four are concatenated, then joined across cells, so Torch-Pruning couples them in one group
    assert set(whole) == ({"box.1.1"} if flat else HEAD_OUTPUTS)
    assert {g.name for g in net.groups} == {"stem.0", "stage1.0", "stage2.0", "box.0.0.0", "box.1.0.0",
                                            "score.0.0.0", "score.1.0.0"}
    for seed in range(3):                                  # counts equal the counter; the outputs keep their shapes
        keep = random_keep(net.groups, np.random.default_rng(seed))
        twin = pruned_copy(model, net.groups, keep, EXAMPLE)
        flops, params = tp.utils.count_ops_and_params(twin, EXAMPLE)
        counts = np.array([int(k.sum()) for k in keep])
        assert (net.cost.flops(counts), net.cost.params(counts)) == (int(flops), int(params))
        with torch.no_grad():
            assert output_shapes(twin(EXAMPLE)) == dense


def test_without_a_classifier_the_official_cost_table_is_unshifted():
    """Nothing is left out of Torch-Pruning's list, so every group reads its own entry: official = corrected."""
    nets = [prepare_network(TwoHeads().eval(), None, EXAMPLE, variant, checks=0) for variant in ("official", "corrected")]
    assert all(g.listed_root == g.name for g in nets[0].groups)
    assert np.array_equal(nets[0].pi, nets[1].pi)


def test_a_classifier_is_prepared_as_before_whatever_the_output_rule():
    """With num_classes the classifier's group is left out before probing, as the official code does,
    and no group is kept whole for reaching the output."""
    model = nn.Sequential(block(1, 8), block(8, 12, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10)).eval()
    net = prepare_network(model, 10, EXAMPLE, "official", checks=1)
    assert {g.name for g in net.groups} == {"0.0", "1.0"} and net.whole == []


def test_an_output_that_is_not_tensors_is_refused_in_one_line():
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = block(1, 8)

        def forward(self, x):
            return {"features": self.conv(x), "names": ["a", "b"]}

    with pytest.raises(ConfigError, match="returns a str among its outputs"):
        with attach(Named(), EXAMPLE, num_classes=None, epochs=6, sl_start=1, sl_end=3):
            pass


def test_attach_runs_the_cycle_on_a_detector_like_model_in_a_loop_of_ones_own(tmp_path):
    """A loop of one's own on TwoHeads: searched every epoch, pruned at sl_end, outputs unchanged in shape,
    the model exported; the run records the groups kept whole and why."""
    torch.manual_seed(0)
    model = TwoHeads()
    x, target = torch.randn(32, 1, 16, 16), torch.randn(32, 3, 8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with attach(model, x[:1], num_classes=None, epochs=6, runs_dir=tmp_path, target=0.3, sl_start=1, sl_end=3,
                variant="corrected", reg=0.02, reg_delta=0.02) as pruner:
        for epoch in range(6):
            pruner.begin_epoch(epoch)
            model.train()
            for it in range(4):
                out = model(x)
                loss = sum((s.mean(1, keepdim=True) - target.mean(1, keepdim=True)[..., :s.shape[-2], :s.shape[-1]])
                           .pow(2).mean() for s in out["scores"]) + sum(b.pow(2).mean() for b in out["boxes"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                pruner.after_step(0.01)
            if pruner.end_epoch(epoch, train_loss=loss.item(), train_acc=None, val_loss=None, val_acc=50.0, lr=0.01):
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    reader = RunReader(pruner.store.dir)
    info = reader.info()
    assert info["status"] == "finished" and info["t_star"] is not None
    assert abs(reader.summary()["flops_reduction"] - 0.3) < 0.05
    with torch.no_grad():
        assert output_shapes(model.eval()(x[:1])) == output_shapes(TwoHeads()(x[:1]))
    assert (reader.dir / "model.pt").is_file()
