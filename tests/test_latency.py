"""cost=latency: the latency table (exact interpolation and calibration, widths read from the probe), its
agreement with a direct timing on a tiny network, its cache, and a run that ends with the measured
latency beside the predicted one."""
import numpy as np
import pytest
import torch
from torch import nn

from osp_engine import get_preset
from osp_engine.interfaces.cli import main
from osp_engine.method import saliency as sal
from osp_engine.method.config import ConfigError, apply_overrides
from osp_engine.method.costcheck import pruned_copy
from osp_engine.method.latency import LatencyModel, LayerSpec, calibrate, calibration_counts, latency_model
from osp_engine.method.groups import UnsupportedModel
from osp_engine.method.network import check_target, prepare_network
from osp_engine.method.selection import select
from osp_engine.running.latency import build_latency, layer_specs, measured_latency
from osp_engine.storage.reader import RunReader

pytest.importorskip("onnxruntime")

TOLERANCE = 0.25          # the table's predicted speed-up within 25 % of the measured one (a loaded CI machine;
                          # bench_speedup --latency measures within 6 % on four networks on a quiet one)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(),
                         nn.Conv2d(48, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(96, 96, 3, padding=1, groups=96), nn.Conv2d(96, 128, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)).eval()


def prepared(model=None):
    return prepare_network(model or small_cnn(), 10, torch.zeros(1, 3, 32, 32), "official", 0)


def test_the_table_interpolates_a_product_of_widths_exactly():
    spec = LayerSpec("conv", "conv", 64, 40, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1))
    ga, gb = spec.grid()
    times = [np.array([[1e-6 * a * b for b in gb] for a in ga])]             # bilinear is exact on a * b
    wa = np.array([[1.0, 0.0, 0.0]])                                        # a = c_0, b = c_1
    wb = np.array([[0.0, 1.0, 0.0]])
    model = latency_model([spec], times, wa, wb, np.array([64, 40]), no_params, "test")
    for a, b in [(64, 40), (37, 13), (8, 5), (3, 2), (50, 33)]:
        assert model.predict(np.array([a, b])) == pytest.approx(1e-6 * a * b, rel=1e-12)
    batch = np.array([[64, 40], [37, 13]])
    assert model.predict(batch) == pytest.approx([1e-6 * 64 * 40, 1e-6 * 37 * 13])


def no_params(counts):
    return 0.0 if np.ndim(counts) == 1 else np.zeros(len(counts))


def test_calibration_fits_the_whole_networks_timings():
    spec = LayerSpec("l", "linear", 32, 32)
    ga, gb = spec.grid()
    def params(c):                                          # as CostModel.params: (G,) -> a number, (B, G) -> (B,)
        out = 10.0 * np.atleast_2d(c)[:, 0] + 4.0 * np.atleast_2d(c)[:, 1]
        return float(out[0]) if np.ndim(c) == 1 else out

    bare = latency_model([spec], [np.array([[float(a * b) for b in gb] for a in ga])],
                         np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]), np.array([32, 32]), params, "t")
    networks = calibration_counts(np.array([32, 32]), np.array([1, 1]))
    assert {k: v.tolist() for k, v in networks.items()} == {"dense": [32, 32], "half": [16, 16],
                                                            "early half": [16, 32], "late half": [32, 16]}
    truth = lambda c: 2.0 * c[0] * c[1] + 0.5 * params(c) + 7.0                          # noqa: E731
    fitted = calibrate(bare, {k: truth(c) for k, c in networks.items()}, networks)
    assert (fitted.scale, fitted.per_param, fitted.rest) == pytest.approx((2.0, 0.5, 7.0))
    assert fitted.predict(np.array([24, 8])) == pytest.approx(truth(np.array([24, 8])))
    shrinking = {k: 100.0 - 0.01 * params(c) for k, c in networks.items()}   # more weights, faster: no fit
    flat = calibrate(bare, shrinking, networks)
    assert flat.scale > 0 and flat.per_param == 0.0


def test_the_widths_follow_the_counts_as_the_pruned_layers_have_them():
    net = prepared()
    specs, calls = layer_specs(net, net.example)
    assert [s.groups for s in specs] == ["one", "one", "depthwise", "one", "one"]
    model = build_fake_latency(net, specs, calls)
    rng = np.random.default_rng(0)
    for _ in range(3):
        counts = np.array([rng.integers(1, c + 1) for c in net.cost.sizes])
        keep = [np.arange(c) < k for c, k in zip(net.cost.sizes, counts)]
        twin = pruned_copy(net.model, net.groups, keep, net.example)
        layers = [twin.get_submodule(s.name) for s in specs]
        want = [(m.in_channels, m.out_channels // m.groups) if isinstance(m, nn.Conv2d) else
                (m.in_features, m.out_features) for m in layers]
        x = np.concatenate([counts, [1]])
        assert list(zip(model.width_a @ x, model.width_b @ x)) == want


def build_fake_latency(net, specs, calls) -> LatencyModel:
    from osp_engine.method.latency import width_maps
    wa, wb = width_maps(net.probe.layout, net.probe.dense, net.probe.coef, net.cost.sizes, calls)
    times = [np.ones((len(s.grid()[0]), len(s.grid()[1]))) for s in specs]
    return latency_model(specs, times, wa, wb, net.cost.sizes, net.cost.params, "fake")


def test_the_tables_prediction_agrees_with_a_direct_timing_and_is_cached(tmp_path):
    net = prepared()
    for attempt in range(3):            # a busy machine can slow the table's timings or the direct ones: again
        cache = tmp_path / f"cache-{attempt}"
        latency, stats = build_latency(net, "onnxruntime", 1, 1, cache)
        net.latency = latency
        assert stats["measured"] == stats["entries"] > 10
        scores = sal.weighted_saliency(sal.all_saliency(net.groups), net.pi)
        chosen = select(scores, net.cost, 0.5, 0.75, 1.0, round_to=8, measure=latency.predict)
        assert abs(chosen.achieved - 0.5) < 0.1
        twin = pruned_copy(net.model, net.groups, chosen.keep, net.example)
        counts = [int(k.sum()) for k in chosen.keep]
        got = measured_latency(net.model, twin, net.example, "onnxruntime", 1, 1, latency.predict(counts),
                               latency.dense, budget_s=1.0)
        if abs(got["predicted_speedup"] / got["speedup"] - 1) < TOLERANCE:
            break
    assert abs(got["predicted_speedup"] / got["speedup"] - 1) < TOLERANCE, got
    with pytest.raises(UnsupportedModel, match="of the predicted latency can go"):    # beyond the floors
        check_target(net, 0.95, 0.75, 1.0, 8, "latency")
    again, second = build_latency(prepared(), "onnxruntime", 1, 1, cache)          # a second run of the network
    assert second["measured"] == 0 and second["entries"] == stats["entries"]
    assert again.predict(np.array(counts)) == latency.predict(np.array(counts))
    _, other_batch = build_latency(prepared(), "onnxruntime", 2, 1, cache)
    assert other_batch["measured"] == stats["entries"]                             # a new batch size is timed


def test_the_default_search_is_unchanged_by_the_measure():
    net = prepared()
    scores = sal.weighted_saliency(sal.all_saliency(net.groups), net.pi)
    for search in ("threshold", "fill"):
        plain = select(scores, net.cost, 0.5, 0.75, 1.0, search=search)
        given = select(scores, net.cost, 0.5, 0.75, 1.0, search=search, measure=net.measure("flops"))
        assert plain.flops == given.flops and plain.reduction == given.reduction == given.achieved
        assert all((a == b).all() for a, b in zip(plain.keep, given.keep))


def test_settings_are_checked_in_one_line():
    demo = get_preset("demo")
    with pytest.raises(ConfigError, match="unknown cost 'time'"):
        apply_overrides(demo, ["cost=time"]).validate()
    with pytest.raises(ConfigError, match="unknown latency_runtime 'tensorrt'"):
        apply_overrides(demo, ["cost=latency", "latency_runtime=tensorrt"]).validate()
    with pytest.raises(ConfigError, match="latency_batch and latency_threads must be >= 1"):
        apply_overrides(demo, ["cost=latency", "latency_batch=0"]).validate()
    assert apply_overrides(demo, ["cost=latency"]).kept_multiple == 8
    assert apply_overrides(demo, ["cost=latency", "round_to=1"]).kept_multiple == 1
    assert demo.kept_multiple == 0


def test_a_latency_run_ends_with_its_measured_latency_beside_the_prediction(tmp_path, capsys):
    code = main(["run", "--preset", "demo", "--runs-dir", str(tmp_path), "--set", "model=resnet20", "--set",
                 "dataset=synthetic-cifar10", "--set", "synthetic_size=128", "--set", "cost=latency", "--set",
                 "target=0.3", "--set", "epochs=4", "--set", "sl_start=0", "--set", "sl_end=1",
                 "--set", "speed_budget_s=0.2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "timing the layers on onnxruntime" in out.err and "latency table on onnxruntime" in out.err
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert any(p.suffix == ".json" for p in (tmp_path / ".latency").iterdir())    # the table, cached by the runs
    s = RunReader(run_dir).summary()
    lat = s["latency"]
    assert s["cost"] == "latency" and lat["batch"] == 1 and lat["measured_ms"] > 0 and lat["dense_ms"] > 0
    assert lat["error"] == pytest.approx(lat["predicted_ms"] / lat["measured_ms"] - 1)
    assert lat["message"] in out.out and "predicted latency -" in out.out
    assert "ms predicted" in RunReader(run_dir).last_event("prune")["message"]
    assert all(c % 8 == 0 for c in final_widths(run_dir))                 # cost=latency keeps multiples of 8


def final_widths(run_dir) -> list[int]:
    from osp_engine.storage.export import load_pruned
    model = load_pruned(run_dir / "model.pt")
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_a_torch_table_is_built_on_the_runs_device(tmp_path):
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(),
                         nn.LazyLinear(10)).eval()
    tiny(torch.zeros(1, 3, 8, 8))
    latency, stats = build_latency(prepare_network(tiny, 10, torch.zeros(1, 3, 8, 8), "official", 0), "torch", 1, 1,
                                   tmp_path)
    assert stats["runtime"].startswith("torch ") and latency.dense > 0


def test_a_run_of_a_model_the_table_cannot_time_is_refused_in_one_line(tmp_path):
    model = nn.Sequential(nn.Conv1d(3, 16, 3), nn.ReLU(), nn.Conv1d(16, 16, 3), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 3, 32))
    net = prepare_network(model, 10, torch.zeros(1, 3, 32), "official", 0)
    with pytest.raises(UnsupportedModel, match="cost=latency cannot time Conv1d layers"):
        build_latency(net, "onnxruntime", 1, 1, tmp_path)
