"""CUDA's code path run on CPU, the fused shrink, and the exported model's measured speed."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from osp_engine import get_preset
from osp_engine.interfaces.cli import main as cli
from osp_engine.models import build_model
from osp_engine.method.network import prepare_network
from osp_engine.method.regularizer import Shrinker
from osp_engine.running.run import Run
from osp_engine.running.speed import measure_speed
from osp_engine.storage.reader import RunReader


def test_the_gpu_code_path_runs_a_whole_cycle_on_cpu(tmp_path):
    """bf16 autocast and channels_last, as on CUDA: a GPU user's first run executes no line CI has not."""
    cfg = dataclasses.replace(get_preset("demo"), gpu_path=True, epochs=12, sl_start=2, sl_end=8, reg=0.02,
                              reg_delta=0.02, speed_budget_s=0.1)
    run = Run(cfg, tmp_path)
    run.prepare()
    seen = set()
    first_conv = next(m for m in run.net.model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.add((o.dtype, i[0].is_contiguous(memory_format=torch.channels_last))))
    assert run.execute() == "finished", run.error
    assert (torch.bfloat16, True) in seen                        # autocast in bf16 on channels_last inputs
    reader = RunReader(run.dir)
    started = next(e for e in reader.events() if e["kind"] == "started")["data"]
    assert started["amp"] is True and started["channels_last"] is True
    assert reader.info()["t_star"] is not None and reader.summary()["final_acc"] > 80
    convs = [m for m in run.net.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)   # again after the prune
    assert all(s.dtype == np.float32 for s in reader.saliency(1))  # decisions from fp32 weights
    plain = Run(dataclasses.replace(cfg, gpu_path=False), tmp_path)
    assert plain.execute() == "finished"
    assert next(e for e in RunReader(plain.dir).events() if e["kind"] == "started")["data"]["amp"] is False


def test_the_shrink_is_one_foreach_call_and_equals_the_per_tensor_formula(monkeypatch):
    net = prepare_network(build_model("digits-resnet8", 10, 8, 1), 10, torch.zeros(1, 1, 8, 8), "official", 0)
    rng = np.random.default_rng(0)
    keep = [rng.random(g.size) < 0.6 for g in net.groups]
    shrinker = Shrinker(net.groups)
    shrinker.set_marked(keep)
    reference = {id(w): w.detach().clone() for w, _ in shrinker.targets}
    for w, marked in shrinker.targets:                            # the per-tensor formula, in order
        reference[id(w)].mul_(1.0 - 0.0137 * marked)
    calls = []
    real = torch._foreach_mul_
    monkeypatch.setattr(torch, "_foreach_mul_", lambda *a: (calls.append(len(a[0])), real(*a)))
    shrinker.step(0.0137)
    assert calls == [len(shrinker.targets)]                        # one call for every weight tensor
    assert all(torch.equal(w, reference[id(w)]) for w, _ in shrinker.targets)


def test_speed_measure_is_a_ratio_of_medians_side_by_side():
    dense = build_model("digits-resnet8", 10, 8, 1)
    s = measure_speed(dense, dense, (1, 8, 8), torch.device("cpu"), batch=32, budget_s=0.05)
    assert s["rounds"] >= 3 and s["batch"] == 32 and s["device"] == "cpu"
    assert s["latency_speedup"] == pytest.approx(s["latency_ms"]["dense"] / s["latency_ms"]["pruned"])
    assert s["throughput_speedup"] == pytest.approx(s["throughput"]["pruned"] / s["throughput"]["dense"])
    assert all(v > 0 for v in (*s["latency_ms"].values(), *s["throughput"].values()))


def test_the_exported_models_speed_is_stored_and_shown(finished_run, tmp_path, monkeypatch, capsys):
    reader = RunReader(finished_run.dir)
    speed = reader.summary()["speed"]
    assert speed["device"] == "cpu" and speed["batch"] == 256 and speed["rounds"] >= 3
    assert speed["latency_speedup"] == pytest.approx(speed["latency_ms"]["dense"] / speed["latency_ms"]["pruned"])
    assert cli(["show", str(finished_run.dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["speed"] == speed and shown["world_size"] == 1
    import shutil
    shutil.copytree(finished_run.dir, tmp_path / finished_run.run_id)
    monkeypatch.setenv("OSP_RUNS_DIR", str(tmp_path))
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60).run()
    card = next(m.value for m in at.markdown if finished_run.run_id in m.value)
    assert f"exported model: {speed['latency_speedup']:.2f}x the dense speed at batch 1" in card
    ort, s = speed["onnxruntime"], reader.summary()
    assert ort["device"] == "cpu" and ort["rounds"] >= 3 and ort["batch"] == 256
    assert ort["latency_speedup"] == pytest.approx(ort["latency_ms"]["dense"] / ort["latency_ms"]["pruned"])
    assert f"in ONNX Runtime {ort['latency_speedup']:.2f}x and {ort['throughput_speedup']:.2f}x" in card
    ratio = s["dense_flops"] / s["final_flops"]
    ups = [speed["latency_speedup"], speed["throughput_speedup"], ort["latency_speedup"], ort["throughput_speedup"]]
    assert f"FLOPs {ratio:.2f}x fewer: speed efficiency {min(ups) / ratio:.2f}-{max(ups) / ratio:.2f}" in card
    at = AppTest.from_string("from osp_studio.compare import render\nrender()\n", default_timeout=60)
    at.session_state["run_id"] = finished_run.run_id
    table = at.run().dataframe[0].value
    assert table["throughput speed-up (x)"].tolist() == [round(speed["throughput_speedup"], 2)]
    assert table["ONNX Runtime speed-up at batch 1 (x)"].tolist() == [round(ort["latency_speedup"], 2)]
    assert table["FLOPs ratio (x)"].tolist() == [round(ratio, 2)]
