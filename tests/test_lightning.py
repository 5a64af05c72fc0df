"""The PyTorch Lightning callback (osp_engine.integrations.lightning): the README's example run as
written, a real Trainer on the bundled digits, the run in the studio, and a cancel sent by the studio."""
import os
import re
import subprocess
import sys
import threading

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT, wait_until
from osp_engine.storage.reader import RunReader, list_runs

pytest.importorskip("lightning")


def _readme_lightning() -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if "lightning" in b]
    return block


pytestmark = pytest.mark.xdist_group("lightning")    # its module fixture is built once, on one worker


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lightning")
    (folder / "example.py").write_text(_readme_lightning())
    env = {**os.environ, "OSP_RUNS_DIR": str(folder / "runs"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "example.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (reader,) = list_runs(folder / "runs")
    assert res.stdout.strip().splitlines()[-1] == str(reader.dir)
    return folder, reader


def test_the_readme_example_prunes_at_a_stable_epoch_on_the_target(lightning_run):
    _, reader = lightning_run
    s = reader.summary()
    assert s["status"] == "finished" and s["prune_reason"] == "stable" and s["epochs"] == 8
    assert abs(s["flops_reduction"] - 0.5) <= 0.005
    assert (reader.dir / "model.pt").is_file()
    # configure_optimizers was called again and the schedule went on: MultiStepLR(milestones=[4, 6])
    # epoch by epoch, whatever the prune epoch (a restarted scheduler would give 0.1 after it)
    assert [r["lr"] for r in reader.epochs()] == pytest.approx([0.1] * 4 + [0.02] * 2 + [0.004] * 2)
    assert s["final_acc"] > 90                     # the pruned network trained on: the new optimiser holds its tensors


def test_osp_figures_reach_lightnings_own_logger(lightning_run):
    folder, reader = lightning_run
    (metrics,) = (folder / "logs" / "lightning_logs").glob("version_*/metrics.csv")
    header, *rows = [line.split(",") for line in metrics.read_text().splitlines()]
    psi = [float(r[header.index("osp/psi_smoothed")]) for r in rows if r[header.index("osp/psi_smoothed")]]
    assert psi == pytest.approx([p for p in reader.summary()["psi"] if p is not None], rel=1e-6)


def test_the_run_is_in_the_studio(lightning_run, monkeypatch):
    folder, reader = lightning_run
    monkeypatch.setenv("OSP_RUNS_DIR", str(folder / "runs"))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_string("from osp_studio.runs import render\nrender()\n", default_timeout=60).run()
    assert not at.exception and reader.run_id in " ".join(m.value for m in at.markdown)
    page = AppTest.from_string("from osp_studio.stability import render\nrender()\n", default_timeout=60)
    page.session_state["run_id"] = reader.run_id
    page.run()
    assert not page.exception and page.get("plotly_chart")


def test_a_cancel_from_the_studio_stops_the_fit(tmp_path):
    import lightning.pytorch as L

    namespace = {}
    code = _readme_lightning().split("torch.manual_seed(0)")[0]          # the module class, not the fit
    exec(compile(code, "README.md", "exec"), namespace)
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from osp_engine.integrations.lightning import OneCyclePruning

    torch.manual_seed(0)
    digits = load_digits()
    x, y = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(digits.target)
    loader = DataLoader(TensorDataset(x[:512], y[:512]), batch_size=64)
    pruning = OneCyclePruning(runs_dir=tmp_path, sl_start=5, sl_end=30)
    trainer = L.Trainer(max_epochs=40, callbacks=[pruning], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    fit = threading.Thread(target=trainer.fit, args=(namespace["Digits"](), loader, loader), daemon=True)
    fit.start()
    wait_until(lambda: pruning.run_dir is not None and RunReader(pruning.run_dir).last_epoch() >= 1, 240)
    RunReader(pruning.run_dir).send_command("cancel")                 # what the studio's Cancel button sends
    fit.join(240)
    assert not fit.is_alive() and trainer.current_epoch < 39
    assert RunReader(pruning.run_dir).info()["status"] == "cancelled"


def test_a_pruned_fits_checkpoint_loads_pruned_and_the_fit_resumes_from_it(tmp_path, monkeypatch):
    """A fit with ModelCheckpoint dies after the prune; its last.ckpt loads with load_from_checkpoint as the
    pruned network (the same outputs), and fit(ckpt_path=...) continues the fit and its run folder to the end:
    pruned once, at the same epoch, the LR on the schedule, the epochs recorded once each."""
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from osp_engine.integrations.lightning import OneCyclePruning, PrunedCheckpoints

    namespace = {}
    exec(compile(_readme_lightning().split("torch.manual_seed(0)")[0], "README.md", "exec"), namespace)

    class Reloadable(PrunedCheckpoints, namespace["Digits"]):
        pass

    class PowerCut(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 5:
                raise RuntimeError("power cut")

    torch.manual_seed(0)
    digits = load_digits()
    x, y = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(digits.target)
    loader = DataLoader(TensorDataset(x[:512], y[:512]), batch_size=64)

    def fit(module, callbacks, ckpt_path=None):
        pruning = OneCyclePruning(runs_dir=tmp_path / "runs", target=0.5, sl_start=1, sl_end=2, threshold=0.6,
                                  distill=0.5)                    # the teacher goes through the reload too
        trainer = L.Trainer(max_epochs=8, callbacks=[pruning, *callbacks, ModelCheckpoint(tmp_path / "ckpt", save_last=True)],
                            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, loader, loader, ckpt_path=ckpt_path)
        return pruning

    first = Reloadable()
    with pytest.raises(RuntimeError, match="power cut"):
        fit(first, [PowerCut()])
    (run_dir,) = list((tmp_path / "runs").iterdir())
    info = RunReader(run_dir).info()
    assert info["status"] == "failed" and info["t_star"] is not None and info["t_star"] <= 3

    loaded = Reloadable.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt").eval()
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    assert {k: v.shape for k, v in loaded.state_dict().items()} == shapes
    assert shapes != {k: v.shape for k, v in Reloadable().state_dict().items()}      # it is the pruned network
    with torch.no_grad():
        assert torch.equal(loaded(x[:32]), first.eval()(x[:32]))

    second = Reloadable()                                                     # dense, as built
    import osp_engine.integrations.lightning as callback_module
    shares, share = [], callback_module.backward_soft_share
    monkeypatch.setattr(callback_module, "backward_soft_share", lambda *a, **k: (shares.append(1), share(*a, **k)))
    pruning = fit(second, [], ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert len(shares) == (8 - 5) * len(loader)                  # the teacher in every step resumed after the prune
    reader = RunReader(pruning.run_dir)
    assert pruning.run_dir == run_dir and reader.info()["status"] == "finished"
    assert reader.info()["t_star"] == info["t_star"]
    assert [r["epoch"] for r in reader.epochs()] == list(range(8))
    assert [r["lr"] for r in reader.epochs()] == pytest.approx([0.1] * 4 + [0.02] * 2 + [0.004] * 2)
    assert {k: v.shape for k, v in second.state_dict().items()} == shapes
    assert [e["kind"] for e in reader.events()].count("prune") == 1 and (run_dir / "model.pt").is_file()
    taught = [e for e in reader.events() if e["kind"] == "teacher"]
    assert [e["epoch"] for e in taught] == [info["t_star"], 7]          # made once, at the prune; its cost at the end
    assert "ms per step over" in taught[-1]["message"]
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    (teacher,) = [v["teacher"] for k, v in state.items() if k.startswith("OneCyclePruning")]
    assert teacher.keys() == Reloadable().state_dict().keys() and all(          # the dense network's weights,
        teacher[k].shape == v.shape for k, v in Reloadable().state_dict().items())   # kept to the fit's end
