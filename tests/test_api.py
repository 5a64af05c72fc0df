"""The public API and the hooks: the README's code as written, refusals, failures, and the studio showing the runs."""
import os
import re
import subprocess
import sys

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch.utils.data import DataLoader, TensorDataset

import osp_engine
from conftest import ROOT
from osp_engine import ConfigError, get_preset
from osp_engine.method.config import apply_overrides
from osp_engine.running.run import new_run_id
from osp_engine.storage.reader import RunReader, list_runs


def _readme_code() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if not any(w in b for w in ("lightning", "ultralytics", "torchvision"))]
    assert len(blocks) == 2, "the README shows one example of the API and one of the hooks (and Lightning's, YOLO's)"
    return "\n".join(blocks)


pytestmark = pytest.mark.xdist_group("api")    # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
    """The README's two examples, run as written in a fresh interpreter (one PyTorch thread)."""
    root = tmp_path_factory.mktemp("readme-runs")
    script = root.parent / "readme_examples.py"
    script.write_text(_readme_code())
    env = {**os.environ, "OSP_RUNS_DIR": str(root), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch.Size([2, 10])" in res.stdout              # the pruned model, reloaded, runs
    return root, {r.summary()["model"]: r for r in list_runs(root)}


def test_readme_examples_write_finished_pruned_runs(readme_runs):
    _, runs = readme_runs
    assert set(runs) == {"smallnet", "smallnet-own-loop"}
    for reader in runs.values():
        s = reader.summary()
        assert s["status"] == "finished" and s["epochs"] == 6 and s["t_star"] is not None
        assert abs(s["flops_reduction"] - 0.5) < 0.03                   # a small net: coarse channel steps
        assert (reader.dir / "model.pt").is_file()
        assert [e["kind"] for e in reader.events()][-2:] == ["exported", "finished"]
    assert runs["smallnet"].summary()["dataset"] == "custom"
    assert "your training loop" in runs["smallnet-own-loop"].events()[0]["message"]


def test_the_studio_shows_both_runs(readme_runs, monkeypatch):
    root, runs = readme_runs
    monkeypatch.setenv("OSP_RUNS_DIR", str(root))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60).run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown)
    for reader in runs.values():
        assert reader.run_id in shown
    for reader in runs.values():
        page = AppTest.from_string("from osp_studio.stability import render\nrender()\n", default_timeout=60)
        page.session_state["run_id"] = reader.run_id
        page.run()
        assert not page.exception and page.get("plotly_chart")


def _batches(n, size=16, batch=32, drop_last=False):
    torch.manual_seed(0)
    x, y = torch.randn(n, 3, size, size), torch.randint(0, 10, (n,))
    return DataLoader(TensorDataset(x, y), batch_size=batch, drop_last=drop_last)


def test_prune_refuses_a_model_it_cannot_prune_without_a_folder(tmp_path):
    import torchvision

    with pytest.raises(ConfigError, match=r"^ShuffleNetV2 on custom: Torch-Pruning cannot trace"):
        osp_engine.prune(torchvision.models.shufflenet_v2_x0_5(num_classes=10), _batches(64, 32), _batches(32, 32),
                         num_classes=10, runs_dir=tmp_path, epochs=4, sl_start=1, sl_end=1)
    assert list(tmp_path.iterdir()) == []


def test_no_training_batch_is_an_error_not_a_finished_run(tmp_path):
    """Fewer images than the batch with drop_last: zero batches per epoch (was 'finished', loss 0.000)."""
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(ConfigError, match=r"gives no batch .*batch_size=32"):
        osp_engine.prune(model, _batches(20, drop_last=True), _batches(20), num_classes=10, runs_dir=tmp_path,
                         epochs=4, sl_start=1, sl_end=1)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_inside_your_loop_is_recorded_and_raised(tmp_path):
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(KeyError):
        with osp_engine.attach(model, torch.zeros(1, 3, 16, 16), num_classes=10, epochs=4, runs_dir=tmp_path,
                               sl_start=1, sl_end=1) as pruner:
            pruner.begin_epoch(0)
            raise KeyError("lost batch")
    (run_dir,) = tmp_path.iterdir()
    s = RunReader(run_dir).summary()
    assert s["status"] == "failed" and s["error"] == "KeyError: 'lost batch'"


def _writer_locks_open() -> list[str]:
    """The writer.lock files this process holds open."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return [p for p in paths if p.endswith("writer.lock")]


def test_an_error_before_the_first_epoch_of_attach_frees_the_lock_and_leaves_no_run(tmp_path, monkeypatch):
    """A full disk between the store's creation and your loop's first epoch: the error propagates, the
    writer lock is freed and the half-begun folder removed."""
    from torch import nn
    from osp_engine.storage.store import RunStore

    def full(self, groups):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RunStore, "write_groups", full)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with pytest.raises(OSError, match="No space left"):
        with osp_engine.attach(model, torch.zeros(1, 3, 16, 16), num_classes=10, epochs=4, runs_dir=tmp_path,
                               sl_start=1, sl_end=1):
            pass
    assert _writer_locks_open() == [] and list(tmp_path.iterdir()) == []


def test_a_run_whose_model_was_overridden_is_not_named_after_the_preset():
    cfg = apply_overrides(get_preset("demo"), ["model=resnet20", "dataset=synthetic-cifar10"])
    assert cfg.preset == "" and "-resnet20-" in new_run_id(cfg)
    same = apply_overrides(get_preset("demo"), ["epochs=10", "model=digits-resnet8"])
    assert same.preset == "demo" and "-demo-" in new_run_id(same)


def test_a_local_weights_file_loads_and_a_classifier_of_another_size_is_left(tmp_path):
    from osp_engine.models import build_model
    from osp_engine.running.run import load_weights

    torch.manual_seed(1)
    trained = build_model("resnet20", 100, 32)                       # 100 classes: its classifier will not fit
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    fresh = build_model("resnet20", 10, 32)
    assert load_weights(fresh, str(tmp_path / "w.pt")) == ["classifier.weight", "classifier.bias"]
    assert torch.equal(fresh.conv_1_3x3.weight, trained.conv_1_3x3.weight)
    assert fresh.classifier.weight.shape == (10, 64)
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not fit the model"):
        load_weights(fresh, str(tmp_path / "other.pt"))


def test_attach_leaves_the_model_in_the_mode_it_came_in(tmp_path):
    """Preparing traces the model in eval mode; a loop that set train() must not then train with
    frozen BatchNorm statistics (found by the Lightning callback: accuracy stuck at chance)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 10)).train()
    model[3].eval()                                                       # a module the loop froze stays frozen
    with osp_engine.attach(model, torch.zeros(1, 1, 8, 8), num_classes=10, epochs=4, runs_dir=tmp_path,
                           sl_start=0, sl_end=1):
        assert [m.training for m in model.modules()] == [True, True, True, True, False, True, True, True]
