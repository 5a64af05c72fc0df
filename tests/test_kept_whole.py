"""Structures Torch-Pruning cannot prune alone: pruned exactly with care, or their groups kept whole.

Each hand-made block is prepared (never a traceback), and what it prunes is checked against
Torch-Pruning's counter and by reloading the exported model (anycnn.check_end_to_end); the groups
kept whole, and why, are asserted exactly.
"""
import numpy as np
import pytest
import torch
from torch import nn

from anycnn import check_end_to_end
from osp_engine.method.costcheck import pruned_copy
from osp_engine.method.network import prepare_network


def cbr(i, o, k=3, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class CSP(nn.Module):
    """CSPNet: a, b = chunk(x, 2); b transformed; concatenated back; a residual over the whole."""
    def __init__(self):
        super().__init__()
        self.stem, self.expand = cbr(3, 64), cbr(64, 128, 1)
        self.block = nn.Sequential(cbr(64, 64), cbr(64, 64))
        self.fuse, self.fc = cbr(128, 128, 1), nn.Linear(128, 10)

    def forward(self, x):
        x = self.expand(self.stem(x))
        a, b = torch.chunk(x, 2, 1)
        return self.fc((self.fuse(torch.cat([a, self.block(b)], 1)) + x).mean((2, 3)))


class Res2(nn.Module):
    """Res2Net: torch.split by a width fixed in the code, hierarchical sums, concatenation."""
    def __init__(self, width=32, scale=4):
        super().__init__()
        self.width = width
        self.stem, self.conv1 = cbr(3, 128), cbr(128, width * scale, 1)
        self.convs = nn.ModuleList(cbr(width, width) for _ in range(scale - 1))
        self.conv3, self.fc = cbr(width * scale, 128, 1), nn.Linear(128, 10)

    def forward(self, x):
        x = self.stem(x)
        parts, out, sp = torch.split(self.conv1(x), self.width, 1), [], None
        for i, conv in enumerate(self.convs):
            sp = conv(parts[i] if i == 0 else sp + parts[i])
            out.append(sp)
        return self.fc((self.conv3(torch.cat(out + [parts[-1]], 1)) + x).mean((2, 3)))


class Ghost(nn.Module):
    """GhostNet: a conv and its depthwise copy concatenated."""
    def __init__(self):
        super().__init__()
        self.stem, self.primary, self.cheap = cbr(3, 32), cbr(32, 24, 1), cbr(24, 24, 3, g=24)
        self.out, self.fc = cbr(48, 32, 1), nn.Linear(32, 10)

    def forward(self, x):
        p = self.primary(self.stem(x))
        return self.fc(self.out(torch.cat([p, self.cheap(p)], 1)).mean((2, 3)))


class PartialResidual(nn.Module):
    """ReXNet: a residual added to the first 32 of 48 channels."""
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 32)
        self.body = nn.Sequential(cbr(32, 48, 1), cbr(48, 48, 3, g=48), cbr(48, 48, 1))
        self.head, self.fc = cbr(48, 64, 1), nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.body(x)
        return self.fc(self.head(torch.cat([y[:, :32] + x, y[:, 32:]], 1)).mean((2, 3)))


class Shuffle(nn.Module):
    """ShuffleNet: a channel shuffle between two grouped convolutions."""
    def __init__(self):
        super().__init__()
        self.stem, self.g1, self.g2 = cbr(3, 128), cbr(128, 256, 1, g=4), cbr(256, 256, 1, g=4)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        y = self.g1(self.stem(x))
        n, c, h, w = y.shape
        y = y.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(self.g2(y).mean((2, 3)))


class ECA(nn.Module):
    """ECA-Net: a 1-D convolution across the pooled channels, viewed as a sequence and back."""
    def __init__(self):
        super().__init__()
        self.stem, self.conv = cbr(3, 32), cbr(32, 32)
        self.eca = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.head, self.fc = cbr(32, 32, 1), nn.Linear(32, 10)

    def forward(self, x):
        y = self.conv(self.stem(x))
        w = self.eca(y.mean((2, 3)).view(y.shape[0], 1, -1)).view(y.shape[0], -1, 1, 1)
        return self.fc(self.head(y * w.sigmoid()).mean((2, 3)))


class RadixSplit(nn.Module):
    """ResNeSt: a conv of radix x C channels viewed as (radix, C), summed, attended and recombined."""
    def __init__(self, c=16, radix=2):
        super().__init__()
        self.radix = radix
        self.stem, self.conv = cbr(3, 32), cbr(32, c * radix)
        self.fc1, self.fc2 = nn.Conv2d(c, 8, 1), nn.Conv2d(8, c * radix, 1)
        self.head, self.fc = cbr(c, 32, 1), nn.Linear(32, 10)

    def forward(self, x):
        x = self.conv(self.stem(x))
        n, rc, h, w = x.shape
        x = x.view(n, self.radix, rc // self.radix, h, w)
        attn = self.fc2(torch.relu(self.fc1(x.sum(1).mean((2, 3), keepdim=True))))
        attn = attn.view(n, self.radix, -1).softmax(1).view(n, self.radix, -1, 1, 1)
        return self.fc(self.head((x * attn).sum(1)).mean((2, 3)))


class CondConv(nn.Module):
    """CondConv: a kernel mixed from experts for each sample, run as one grouped convolution with the
    batch folded into the channels, and unfolded after."""
    def __init__(self, c=16, experts=3):
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 64), cbr(64, c))
        self.route = nn.Linear(c, experts)
        self.experts = nn.Parameter(torch.randn(experts, c * c * 9) / 12)
        self.bn, self.head, self.fc = nn.BatchNorm2d(c), nn.Sequential(cbr(c, 64), cbr(64, 64)), nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        n, c, h, w = x.shape                                       # (n, c, h, w)
        kernels = (self.route(x.mean((2, 3))).sigmoid() @ self.experts).view(n * c, c, 3, 3)
        y = torch.nn.functional.conv2d(x.reshape(1, n * c, h, w), kernels, padding=1, groups=n)   # (1, n*c, h, w)
        y = y.permute(1, 0, 2, 3).view(n, c, h, w)
        return self.fc(self.head(torch.relu(self.bn(y))).mean((2, 3)))


class MisalignedGroups(nn.Module):
    """Two branches of 8 channels concatenated into a convolution of 4 groups of 4: a unit of a branch
    (every other channel) would take two channels from two groups and none from the others."""
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = cbr(3, 32), cbr(32, 8), cbr(32, 8)
        self.mix, self.head, self.fc = cbr(16, 16, g=4), cbr(16, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(self.head(self.mix(torch.cat([self.a(x), self.b(x)], 1))).mean((2, 3)))


BLOCKS = {"csp": CSP, "condconv": CondConv, "misaligned": MisalignedGroups, "eca": ECA, "split-attention": RadixSplit, "res2net": Res2, "ghost": Ghost, "partial-residual": PartialResidual, "shuffle": Shuffle}
KEPT_WHOLE = {                        # block -> {group kept whole: what its reason says}
    "csp": {}, "ghost": {},
    "misaligned": {"a.0": "grouped convolution mix.0 reads channels of a.0 that are not aligned with its 4 groups",
                   "b.0": "grouped convolution mix.0 reads channels of b.0 that are not aligned with its 4 groups"},
    "condconv": {"stem.1.0": "a channel shuffle",    # folded into the batch, convolved, permuted, unfolded
                 "route": "elements moved between the batch dimension and the channels (1, 2304) -> (16, 16, 3, 3) (View)"},
    "res2net": {"conv1.0": "`sp = conv(parts[i] if i == 0 else sp + parts[i])` fails in convs.0.0 (Conv2d)"},
    "partial-residual": {"stem.0": "channels sliced [:, 0:32] of 48 channels (Slice)",
                         "body.2.0": "channels sliced [:, 0:32] of 48 channels (Slice)"},
    "shuffle": {"g1.0": "a channel shuffle"},
    "eca": {"conv.0": "channels reshaped across dimensions (1, 32) -> (1, 1, 32) (View)",
            "eca": "channels reshaped across dimensions (1, 1, 32) -> (1, 32, 1, 1) (View)"},
    "split-attention": {"conv.0": "channels reshaped across dimensions (1, 32, 16, 16) -> (1, 2, 16, 16, 16) (View)",
                        "fc2": "a channel shuffle"},      # viewed (radix, C), softmax over the radix, viewed back
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_hand_made_block_prunes_what_it_can_and_keeps_the_rest_whole(name, tmp_path):
    net = check_end_to_end(BLOCKS[name], torch.randn(1, 3, 16, 16), 10, tmp_path)
    assert net is not None
    whole = {k.name: k.reason for k in net.whole}
    assert set(whole) == set(KEPT_WHOLE[name])
    for group, says in KEPT_WHOLE[name].items():
        assert says in whole[group]
    assert not {g.name for g in net.groups} & set(whole)


def test_a_chunked_group_goes_in_equal_units_of_its_parts():
    net = prepare_network(CSP().eval(), 10, torch.zeros(1, 3, 16, 16), "official")
    expand = next(g for g in net.groups if g.name == "expand.0")
    assert (expand.size, expand.unit) == (128, 2)                  # unit j = channels {j, j + 64}
    assert expand.unit_of()[[0, 64, 5, 69]].tolist() == [0, 0, 5, 5]


def _silenced(model, group, drop: np.ndarray):
    """The dense model with group channels `drop` made exactly 0 where they are made: every BatchNorm of
    the group gives 0 there (gamma = beta = 0), and ReLU(0) = 0 carries it to every reader."""
    import copy

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for mem in group.members:
            norm = twin.get_submodule(mem.layer)
            if isinstance(norm, nn.BatchNorm2d):
                rows = mem.param_index[torch.from_numpy(drop)[mem.group_index]]
                norm.weight[rows] = 0
                norm.bias[rows] = 0
    return twin


@pytest.mark.parametrize("name, root", [("csp", "expand.0"), ("ghost", "cheap.0"), ("res2net", "convs.2.0"),
                                        ("shuffle", "g2.0")])
def test_what_is_pruned_is_what_was_silenced(name, root):
    """Removing a unit physically gives the same output as silencing its channels where they are made:
    Torch-Pruning's channel mapping through chunks and concatenations is the model's own."""
    torch.manual_seed(0)
    model = BLOCKS[name]().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 16, 16)
    net = prepare_network(model, 10, x[:1], "corrected")
    keep = [np.ones(g.size, dtype=bool) for g in net.groups]
    g = next(g for g in net.groups if g.name == root)
    keep[g.gid] = g.unit_of().numpy() != 1
    pruned, silenced = pruned_copy(model, net.groups, keep, x[:1]), _silenced(model, g, ~keep[g.gid])
    with torch.no_grad():
        pruned, silenced = pruned(x), silenced(x)
    assert torch.allclose(pruned, silenced, atol=1e-5)


def test_a_model_that_breaks_wherever_it_loses_a_channel_is_refused_in_one_line():
    class WidthBound(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = cbr(3, 16), nn.Linear(16, 10)

        def forward(self, x):
            y = self.conv(x)
            if y.shape[1] != 16:
                raise ValueError("this network needs 16 channels")
            return self.fc(y.mean((2, 3)))

    from osp_engine.method.groups import UnsupportedModel

    with pytest.raises(UnsupportedModel) as refused:
        prepare_network(WidthBound().eval(), 10, torch.zeros(1, 3, 8, 8), "official")
    assert str(refused.value) == (
        "every group that could lose a channel must be kept whole (1; the first, conv.0: the model (WidthBound): "
        "`raise ValueError(\"this network needs 16 channels\")` fails with ValueError: this network needs 16 channels)")


def test_an_unreachable_target_is_refused_with_the_largest_reduction():
    from osp_engine.method.groups import UnsupportedModel
    from osp_engine.method.network import check_target, max_reduction

    net = prepare_network(PartialResidual().eval(), 10, torch.zeros(1, 3, 16, 16), "official")
    top = max_reduction(net, 0.75, 1.0)
    assert 0.3 < top < 0.9
    check_target(net, top, 0.75, 1.0)
    with pytest.raises(UnsupportedModel, match=rf"at most {top:.4f} of the FLOPs can go .*2 groups kept whole"):
        check_target(net, min(top + 0.01, 0.95), 0.75, 1.0)


def test_mnasnet_reloads_into_a_fresh_instance(tmp_path):
    """MNASNet reads its own state-dict version when loading: the export keeps it."""
    import torchvision

    check_end_to_end(lambda: torchvision.models.mnasnet0_5(num_classes=10), torch.randn(1, 3, 32, 32), 10, tmp_path)


def test_a_run_records_its_groups_kept_whole_and_the_studio_shows_them(tmp_path, monkeypatch):
    """A real tiny run of the partial-residual block: the summary (show --json), the run card and the
    Channels page name the two groups kept whole and why."""
    from streamlit.testing.v1 import AppTest
    from torch.utils.data import DataLoader, TensorDataset

    import osp_engine
    from conftest import ROOT
    from osp_engine.storage.reader import RunReader

    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))
    data = DataLoader(TensorDataset(x, y), batch_size=32)
    run_dir = osp_engine.prune(PartialResidual(), data, data, num_classes=10, runs_dir=tmp_path / "runs", epochs=5,
                               sl_start=0, sl_end=2, target=0.2, reg=0.01, reg_delta=0.01, speed_budget_s=0)
    kept = RunReader(run_dir).summary()["kept_whole"]
    assert [(k["name"], k["size"]) for k in kept] == [("stem.0", 32), ("body.2.0", 48)]
    assert all(k["reason"] == "channels sliced [:, 0:32] of 48 channels (Slice)" for k in kept)
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    pages = {}
    for name in ("runs", "channels"):
        at = AppTest.from_string(f"from osp_studio.{name} import render\nrender()\n", default_timeout=60)
        at.session_state["run_id"] = run_dir.name
        pages[name] = at.run()
        assert not pages[name].exception
    assert any("2 groups kept whole (never pruned: see Channels)" in m.value for m in pages["runs"].markdown)
    assert [s.value for s in pages["channels"].subheader][-1] == "Groups kept whole (2)"
    table = pages["channels"].dataframe[0].value
    assert table["group"].tolist() == ["stem.0", "body.2.0"] and table["channels"].tolist() == [32, 48]


def test_torch_pruning_grouping_is_bounded_in_time(monkeypatch):
    """A grouping call past GROUPING_BUDGET_S stops with one line (ECA blocks took minutes)."""
    from osp_engine.method import graph
    from osp_engine.method.groups import UnsupportedModel, build_groups, find_classifier
    from osp_engine.method.graph import build_graph

    model, x = CSP().eval(), torch.zeros(1, 3, 16, 16)
    monkeypatch.setattr(graph, "GROUPING_BUDGET_S", 0.0)
    with pytest.raises(UnsupportedModel, match=r"^Torch-Pruning's grouping did not finish in 0 s \(channels reshaped"):
        build_groups(model, build_graph(model, x), find_classifier(model, 10))
    monkeypatch.setattr(graph, "GROUPING_BUDGET_S", 30.0)
    assert [g.name for g in build_groups(model, build_graph(model, x), find_classifier(model, 10))] == \
        ["stem.0", "expand.0", "block.0.0", "block.1.0"]
