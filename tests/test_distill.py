"""Distillation from the dense network at the prune (distill > 0): the loss is the formula, alpha = 0
changes nothing, the teacher survives a kill during fine-tuning, a branch may set it, the card says so."""
import json
import math
import re

import pytest
import torch
from torch import nn

from osp_engine import get_preset
from osp_engine.interfaces.cli import main
from osp_engine.method.config import ConfigError, apply_overrides
from osp_engine.method.distill import backward_soft_share, distillation_loss, soft_term
from osp_engine.running.run import Run
from osp_engine.storage.reader import RunReader, reproducible_content

SHORT = ["epochs=8", "sl_start=1", "sl_end=4", "reg=0.02", "reg_delta=0.02", "speed_budget_s=0", "candidate_every=0"]


def test_the_loss_is_the_formula_on_a_hand_computed_batch():
    student = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    y = torch.tensor([1, 2])
    alpha, t = 0.25, 2.0

    def softmax(v):
        e = [math.exp(a) for a in v]
        return [a / sum(e) for a in e]

    ce = sum(-math.log(softmax(s)[c]) for s, c in zip(student.tolist(), y.tolist())) / 2
    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax([a / t for a in tv]), softmax([a / t for a in sv])))
             for sv, tv in zip(student.tolist(), teacher.tolist())) / 2
    want = (1 - alpha) * ce + alpha * t * t * kl
    assert float(distillation_loss(student, teacher, y, alpha, t)) == pytest.approx(want, rel=1e-6)
    assert float(soft_term(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)      # a perfect student: no soft loss


@pytest.mark.parametrize("scale", [1.0, 1024.0 / 4])          # plain, and a loss scaler's 1024 over 4 accumulated steps
def test_a_trainers_own_backward_gets_the_formulas_gradients(scale):
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    x, y, teacher = torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 3)
    logits = net(x)
    loss = scale * nn.functional.cross_entropy(logits, y)      # what the trainer backpropagates
    backward_soft_share(loss, logits, teacher, 0.3, 4.0, scale)
    loss.backward()
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    (scale * distillation_loss(net(x), teacher, y, 0.3, 4.0)).backward()
    for g, p in zip(got, net.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-5, atol=1e-6 * scale)


def test_settings_are_checked_in_one_line():
    demo = get_preset("demo")
    for pairs, words in ((["distill=1"], "distill 1.0 is outside [0, 1)"), (["distill_temperature=0"], "must be positive"),
                         (["teacher=worst"], "teacher 'worst' is unknown"), (["teacher_precision=int8"], "unknown"),
                         (["teacher_device=tpu"], "teacher_device 'tpu' is unknown")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            apply_overrides(demo, pairs).validate()


def _run(root, *pairs):
    run = Run(apply_overrides(get_preset("demo"), [*SHORT, *pairs]), root)
    assert run.execute() == "finished", run.error
    return RunReader(run.dir)


def _weights(reader):
    return torch.load(reader.dir / "model.pt", weights_only=True)["state_dict"]


def test_alpha_zero_is_todays_run_and_a_teacher_only_acts_after_the_prune(tmp_path):
    today = _run(tmp_path / "a")
    zero = _run(tmp_path / "b", "distill=0", "distill_temperature=2", "teacher=best", "teacher_precision=bfloat16")
    a, b = _weights(today), _weights(zero)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)           # bit-identical
    assert [r["train_loss"] for r in today.epochs()] == [r["train_loss"] for r in zero.epochs()]
    assert today.summary()["teacher"] is None and zero.summary()["teacher"] is None
    taught = _run(tmp_path / "c", "distill=0.5", "teacher_precision=bfloat16", "teacher_device=cpu")
    t_star = taught.info()["t_star"]
    assert t_star == today.info()["t_star"]
    before = [r["train_loss"] for r in taught.epochs() if r["epoch"] <= t_star]
    assert before == [r["train_loss"] for r in today.epochs() if r["epoch"] <= t_star]   # the same until the prune
    assert [r["train_loss"] for r in taught.epochs()] != [r["train_loss"] for r in today.epochs()]
    s = taught.summary()
    assert s["distill"] == 0.5 and s["teacher"]["alpha"] == 0.5 and s["teacher"]["weight_bytes"] > 0
    assert "distillation from the dense network at the prune: alpha 0.5, T 4" in s["teacher"]["message"]
    halved = sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in _dense_demo().state_dict().values())
    assert "in bfloat16 on cpu" in s["teacher"]["message"] and s["teacher"]["weight_bytes"] == halved   # bf16: 2 bytes
    tuning = [r for r in taught.epochs() if r["phase"] == "pruned"]
    from osp_engine.running.data import load_dataset
    batches = len(load_dataset(apply_overrides(get_preset("demo"), SHORT))[0])
    assert s["teacher"]["steps"] == len(tuning) * batches and s["teacher"]["forward_ms"] > 0   # one forward a step
    assert "ms per step over" in s["teacher"]["message"] and "% of the fine-tuning's" in s["teacher"]["message"]


def test_a_distilled_run_stopped_during_fine_tuning_resumes_to_the_same_model(tmp_path, monkeypatch):
    settings = ["distill=0.5", "teacher=best", "keep_checkpoints=0"]
    whole = _run(tmp_path / "whole", *settings)
    calls = {"pruned": 0}
    original = Run._between_batches

    def power_cut(self, store):                               # five batches into the fine-tuning
        calls["pruned"] += self.record is not None and RunReader(self.dir).info()["t_star"] is not None
        if calls["pruned"] == 5:
            raise RuntimeError("power cut")
        return original(self, store)

    monkeypatch.setattr(Run, "_between_batches", power_cut)
    cut = Run(apply_overrides(get_preset("demo"), [*SHORT, *settings]), tmp_path / "cut")
    assert cut.execute() == "failed" and "power cut" in cut.error
    monkeypatch.setattr(Run, "_between_batches", original)
    resumed = Run.resume(cut.dir)
    assert resumed.execute() == "finished", resumed.error
    assert reproducible_content(cut.dir) == reproducible_content(whole.dir)
    a, b = _weights(RunReader(cut.dir)), _weights(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _dense_demo():
    from osp_engine.models import build_model
    return build_model("digits-resnet8", 10, 8, 1)


def test_your_own_loop_takes_the_fine_tuning_loss_from_the_pruner(tmp_path):
    from osp_engine import attach

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    with attach(model, x, num_classes=10, epochs=4, runs_dir=tmp_path, distill=0.5, distill_temperature=2.0,
                sl_start=0, sl_end=1) as pruner:
        logits = model(x)
        assert torch.equal(pruner.fine_tuning_loss(logits, x, y), nn.functional.cross_entropy(logits, y))
        pruner.begin_epoch(0)
        pruner.end_epoch(0, train_loss=1.0, train_acc=None, val_loss=None, val_acc=50.0, lr=0.1)
        pruner.prune_at(0)                                         # "Prune now": the teacher is the dense network
        dense_out = pruner.teacher.model(x)
        logits = model(x)
        want = distillation_loss(logits, dense_out, y, 0.5, 2.0)
        assert torch.allclose(pruner.fine_tuning_loss(logits, x, y), want)
        for epoch in range(1, 4):
            pruner.begin_epoch(epoch)
            pruner.end_epoch(epoch, train_loss=1.0, train_acc=None, val_loss=None, val_acc=50.0, lr=0.1)


def test_the_best_dense_weights_go_through_the_pruners_state(tmp_path):
    from osp_engine.running.pruner import Pruner
    run = Run(apply_overrides(get_preset("demo"), [*SHORT, "distill=0.5", "teacher=best"]), tmp_path)
    run.prepare()
    pruner = Pruner(run.cfg, run.net, store=None)
    pruner.row = {}
    pruner._keep_best_dense(90.0)
    pruner._keep_best_dense(80.0)                                # not better: the 90 % weights stay
    state = pruner.state()
    assert state["best_dense"]["metric"] == 90.0
    again = Pruner(run.cfg, run.net, store=None)
    again.load_state(state)
    assert again.best_dense[0] == 90.0 and again.best_dense[1].keys() == run.net.model.state_dict().keys()


def test_a_branch_may_distill_and_nothing_else_may_change(filled_root, capsys):
    from osp_engine.running.branch import branch_epochs

    root, run_id = filled_root
    parent, epoch = str(root / run_id), str(branch_epochs(root / run_id)[2])
    assert main(["branch", parent, "--epoch", epoch, "--set", "epochs=3"]) == 2
    assert "a branch keeps its parent's recipe: epochs cannot change" in capsys.readouterr().err
    assert main(["branch", parent, "--epoch", epoch, "--set", "distill=0.5", "--set", "teacher=best"]) == 2
    assert "kept no best dense weights" in capsys.readouterr().err       # the parent ran without teacher=best
    assert not [p for p in root.iterdir() if p.name != run_id]           # refused: no run folder


def test_the_branches_page_branches_the_same_epoch_with_distillation(filled_root):
    from streamlit.testing.v1 import AppTest

    from conftest import wait_until
    from osp_engine.running.branch import branches_of

    root, run_id = filled_root
    at = AppTest.from_string("from osp_studio.branches import render\nrender()\n", default_timeout=60)
    at.session_state["run_id"] = run_id
    at.run()
    at.checkbox(key=f"whatif_distill_{run_id}").check().run()
    at.button(key="whatif_branch").click().run()                # at the slider's default epoch
    assert not at.exception and not at.error
    wait_until(lambda: [b for b in branches_of(root, run_id) if b.info()["status"] == "finished"], 300)
    (branch,) = branches_of(root, run_id)
    s = branch.summary()
    assert "-kd" in branch.run_id and s["distill"] == 0.5 and s["teacher"]["alpha"] == 0.5
    assert s["t_star"] == branch.info()["config"]["branch_epoch"]
    at.run()
    names = [t.get("name") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert "final accuracy with distillation" in names
