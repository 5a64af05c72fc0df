"""The public API: prune your own nn.Module, with osp's training loop or with yours.

- `prune(model, train, val, num_classes=...)` runs the whole cycle (osp's loop, the one LR cycle,
  search, shrink, PSI, prune, fine-tune) on your model and your batches, and returns the run folder.
- `attach(model, example, num_classes=..., epochs=...)` gives a `Pruner` whose hooks your own
  trainer calls (osp_engine.running.pruner); leaving the `with` block exports the model and records how
  the run ended. num_classes=None takes a model whose output is not logits (a detector).

Either way the run is an ordinary run folder under the runs folder (runs/ or $OSP_RUNS_DIR): the
studio lists it and draws it live. Any Config field can be passed as a keyword (target=0.5, ...).
A model osp cannot prune exactly raises ConfigError with one line, before anything is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import traceback
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from ..running.commands import Cancelled, Relay
from ..method.config import Config, ConfigError
from ..running.data import DatasetInfo
from ..storage.faults import explain
from ..method.groups import UnsupportedModel
from ..running.kernels import guard_strided_1x1
from ..method.network import Prunable, check_target, prepare_network
from ..running.latency import latency_table
from ..running.teacher import Teacher
from ..method.groups import prune_groups
from ..running.record import RunRecord
from ..storage.metric import Metric, as_metric
from ..storage.reader import RunReader
from ..running.pruner import Pruner
from ..running.run import Run, new_run_id, package_version, prepare_root, resolve_device


def _config(model: nn.Module, name: str | None, settings: dict) -> Config:
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: see osp_engine.Config for the fields")
    settings = {"dataset": "custom", "device": "cpu", **settings}
    return dataclasses.replace(Config(), model=name or type(model).__name__, **settings)


def _resumed(run_dir: Path, epochs: int) -> tuple[Config, Metric]:
    """The config and metric of the attached run at run_dir, to continue it for `epochs` epochs."""
    try:
        info = RunReader(run_dir).info()
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} is not a run folder: the checkpoint's run is gone") from None
    cfg = Config.from_json(json.dumps(info["config"]))
    if cfg.epochs != epochs:
        raise ConfigError(f"{run_dir.name} was planned for {cfg.epochs} epochs, not {epochs}: resume it with as many")
    return cfg, info["metric"]


def _prepared(model: nn.Module, num_classes: int | None, example: torch.Tensor, cfg: Config, root: Path) -> Prunable:
    """prepare_network with the config's settings (cost=latency: its table, cached under `root`) and a
    reachable target, refusals as one ConfigError line."""
    try:
        net = prepare_network(model, num_classes, example, cfg.variant, cfg.cost_checks, attention=cfg.attention)
        if cfg.cost == "latency":
            net.latency = latency_table(net, cfg, root)
        check_target(net, cfg.target, cfg.l_max, cfg.l_k, cfg.kept_multiple, cfg.cost)
    except UnsupportedModel as e:
        raise ConfigError(f"{cfg.model}: {e}") from None
    return net


def prune(model: nn.Module, train: Iterable, val: Iterable, *, num_classes: int, runs_dir: str | Path | None = None,
          name: str | None = None, log=None, **settings) -> Path:
    """Train, search, shrink, prune and fine-tune `model` (pruned in place); returns the run folder.

    train, val: re-iterable batches (x, y), e.g. DataLoaders, with len(); x: (N, C, H, W) float,
    y: (N,) class ids. name: the run's label (default: the model's class name). log(line): progress.
    """
    cfg = _config(model, name, settings)
    x, _ = next(iter(val))
    info = DatasetInfo(num_classes, x.shape[-1], x.shape[1], f"custom ({len(train)} train batches)", x.shape[-2])
    run = Run(cfg, runs_dir, model=model, data=(train, val, info))
    run.prepare()
    status = run.execute(log)
    if status == "failed":
        raise RuntimeError(f"run {run.dir} failed: {run.error}")
    return run.dir


@contextlib.contextmanager
def attach(model: nn.Module, example: torch.Tensor, *, num_classes: int | None, epochs: int,
           runs_dir: str | Path | None = None, name: str | None = None, metric: Metric | str | None = None,
           resume: dict | None = None, **settings) -> Iterator[Pruner]:
    """A Pruner on `model` for your own training loop, writing a run folder.

    example: one input batch (its first image fixes the input shape); num_classes: the size of the
    logits the model returns, whose classifier is never pruned; None for a model whose output is not
    logits (tensors, or tuples, lists and dicts of them: a detector's boxes and scores), where every
    group whose channels reach an output is kept whole instead. Your loop gives end_epoch its
    validation metric as val_acc; metric names it for the studio, the report and the trackers: a
    name ("mAP50-95", higher is better, in percent) or a Metric (storage/metric.py); default accuracy
    in percent. epochs: how many epochs your loop runs (the stop rule's sl_end must fall before the
    last). On leaving the block the model is exported and the run marked finished; an exception marks
    it failed with the error (and propagates).

    resume: {"run_dir", "epoch": t, "pruner": Pruner.state() after epoch t, and with distillation "teacher": the
    teacher's weights (Pruner.teacher.state())} continues that attached run
    with `model` dense as built (its config and metric are the run's; settings are not used): pruned
    again as it was, the method's state restored, the epochs recorded after t rewound. Load the
    weights of epoch t into the model after entering (they are pruned ones once the run has pruned).
    """
    if resume is None:
        cfg = _config(model, name, dict(settings, epochs=epochs)).validate(model_registry=False, dataset_registry=False)
        try:
            metric = as_metric(metric)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"metric: {e}") from None
    else:
        cfg, metric = _resumed(Path(resume["run_dir"]), epochs)
    device = resolve_device(cfg.device)
    root = prepare_root(runs_dir) if resume is None else Path(resume["run_dir"]).parent
    net = _prepared(model.to(device), num_classes, example[:1].to(device), cfg, root)
    guard_strided_1x1(model)                           # your loop trains it: off oneDNN's unsound kernel (kernels.py)
    shape = list(example.shape[1:])
    if resume is None:
        record = RunRecord.attached(cfg, net, shape, device, root, new_run_id(cfg),
                                    {"torch": torch.__version__, "torch_pruning": package_version("torch_pruning")},
                                    metric)
    else:
        record = RunRecord.reattached(Path(resume["run_dir"]), cfg, resume["pruner"], resume["epoch"])
    try:
        pruner = Pruner(cfg, net, record.store, metric=metric)
        if resume is not None:
            state = resume["pruner"]
            if resume.get("teacher") is not None:     # distillation: the dense network at the prune, as it was
                pruner.teacher = Teacher.restored(net.model, resume["teacher"], cfg)
            if state["pruned"]:                        # the dense model as built loses the channels it had lost
                prune_groups(net.graph, net.groups, list(state["keep"]))
            pruner.load_state(state)
        pruner.tracking = record.tracking
        pruner.relay = Relay(record.store, pruner.commands)
        pruner.relay.poll(force=True)                  # the studio can steer the run from now on
    except BaseException as e:
        if resume is None:
            record.abandon()                           # a run that never began is no run
        else:
            record.end("failed", f"{type(e).__name__}: {e}", f"could not resume: {type(e).__name__}: {e}")
        raise
    status, error, trace, t0 = "failed", None, None, time.time()
    try:
        yield pruner
        arch = dict(model=cfg.model, num_classes=num_classes, image_size=shape[-1], in_channels=shape[0],
                    input_shape=shape, custom=True)
        pruner.finish(arch)
        status = "finished"
    except Cancelled:                                  # cancelled from the studio: the loop stops, no error
        status, error = "cancelled", pruner.commands.reason
    except BaseException as e:
        error, trace = explain(e, record.store.dir) or f"{type(e).__name__}: {e}", traceback.format_exc()
        raise
    finally:
        record.end(status, error, f"finished in {time.time() - t0:.1f} s" if status == "finished" else error, trace)


def leave(stack: contextlib.ExitStack | None, exception: BaseException | None = None) -> None:
    """Leave an `attach` block that a trainer's callbacks hold open in `stack`: without an exception the
    model is exported and the run finished; with one the run is recorded as it says (failed, or cancelled
    for commands.Cancelled), and the exception is not raised here (the trainer has its own)."""
    if stack is None:
        return
    if exception is None:
        stack.close()
    else:
        with contextlib.suppress(BaseException):
            stack.__exit__(type(exception), exception, exception.__traceback__)
