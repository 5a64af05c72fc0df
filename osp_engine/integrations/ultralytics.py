"""One-cycle structured pruning inside Ultralytics' own trainer: `YOLO(...).train(...)` with the cycle added.

    from ultralytics import YOLO
    from osp_engine.integrations.ultralytics import OneCyclePruning

    model = YOLO("yolov8n.yaml")
    pruning = OneCyclePruning(target=0.5).add_to(model)
    model.train(data="data.yaml", epochs=30, imgsz=64)
    YOLO(pruning.trainer.last)        # the pruned model: validates, predicts, exports as any YOLO model

The trainer's callbacks run the method's steps: the search at every epoch's start, the shrink after
every optimiser step (a step post-hook, so accumulated batches count once), the record and the stop rule
after validation, whose mAP50-95 (box; mask for a segmentation model) is the run's metric. After the
prune, in the same callback: the EMA model loses the same channels (Torch-Pruning's history replayed on
it, so its average goes on), the optimiser is rebuilt with every parameter in its old group and the
groups' settings (learning rates, initial_lr, momentum, decay; fresh moments, as the official code's new
SGD), the LR scheduler is rebuilt on it at the same epoch, and the best fitness is reset so that best.pt
is a pruned model. The AMP scaler holds no per-parameter state and stays. Ultralytics saves the pruned
module itself in last.pt and best.pt, so they load with YOLO(path); osp's run folder (model.pt, run.db)
stays data only. Groups that reach an output (the heads' last convolutions and the neck convolutions
whose features the head returns) and groups inside attention layers (a YOLO11's C2PSA) are kept whole.

Ultralytics is AGPL-3.0: an optional extra, imported by nothing of osp but this module. Single device
only (the prune changes the parameters a DDP wrapper holds); a resumed Ultralytics run is refused.
"""
from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import torch

from ..interfaces.api import attach, leave
from ..method.config import ConfigError
from ..running.commands import Cancelled
from ..storage.export import replay_history
from ..storage.metric import Metric

try:
    from ultralytics.utils.torch_utils import unwrap_model
except ImportError as e:                                  # one line, not a traceback into Ultralytics
    raise ImportError("osp_engine.integrations.ultralytics needs Ultralytics (AGPL-3.0, an optional extra): "
                      "pip install ultralytics") from e

TASKS = ("detect", "segment")
CALLBACKS = ("on_train_start", "on_train_epoch_start", "on_fit_epoch_end", "on_train_end", "teardown")
MAP_KEYS = (("metrics/mAP50-95(M)", "mAP50-95 (mask)"), ("metrics/mAP50-95(B)", "mAP50-95 (box)"))


def stop_rule(epochs: int) -> dict:
    """The official CIFAR recipe's stop rule scaled to `epochs`: the shrink from 10 % of the cycle, the
    forced prune after 40 % (30 and 120 of 300 epochs), leaving at least one epoch to fine-tune."""
    sl_start = max(1, round(0.1 * epochs))
    return dict(sl_start=sl_start, sl_end=min(max(sl_start + 1, round(0.4 * epochs)), epochs - 2))


class OneCyclePruning:
    def __init__(self, target: float = 0.5, *, runs_dir: str | Path | None = None, name: str | None = None,
                 **settings) -> None:
        """settings: any osp Config field (threshold=0.99, sl_start=..., variant="corrected", ...); epochs is
        the trainer's; sl_start and sl_end default to `stop_rule(epochs)`; attention defaults to "whole"."""
        self.target, self.runs_dir, self.name, self.settings = target, runs_dir, name, settings
        self.pruner = self.trainer = None
        self.run_dir: Path | None = None
        self._stack: contextlib.ExitStack | None = None
        self._hook = None
        self._metric_key = ""

    def add_to(self, model) -> "OneCyclePruning":
        """Register the cycle's callbacks on a `YOLO` model; its next train() runs the cycle. A model osp
        cannot prune is refused here in one line (ConfigError): RT-DETR, and tasks other than detect and
        segment; any other refusal comes when training starts, from the network itself."""
        kind = type(getattr(model, "model", None)).__name__
        if kind.startswith("RTDETR"):
            raise ConfigError(f"{kind}: RT-DETR's transformer decoder cannot be pruned by channels; osp prunes "
                              f"convolutional detectors (YOLOv5u, YOLOv8, YOLO11)")
        if getattr(model, "task", None) not in TASKS:
            raise ConfigError(f"{kind}: task {getattr(model, 'task', None)!r}; OneCyclePruning prunes "
                              f"{' and '.join(TASKS)} models")
        for event in CALLBACKS:
            model.add_callback(event, getattr(self, event))
        return self

    # ---------------------------------------------------------------- start and end
    def on_train_start(self, trainer) -> None:
        if trainer.world_size > 1:
            raise ConfigError("OneCyclePruning runs on one device: the prune changes the parameters DDP holds")
        if trainer.start_epoch > 0:
            raise ConfigError("OneCyclePruning cannot resume an Ultralytics run: start a new one")
        if not trainer.args.val:
            raise ConfigError("OneCyclePruning needs val=True: the stop rule reads every epoch's mAP")
        self._metric_key, metric = next(((k, m) for k, m in MAP_KEYS if k in trainer.metrics), (None, None))
        if metric is None:
            raise ConfigError(f"OneCyclePruning prunes detection and segmentation models; this trainer reports "
                              f"{sorted(trainer.metrics)[:4]}, no mAP50-95")
        model = unwrap_model(trainer.model)
        imgsz = trainer.args.imgsz if isinstance(trainer.args.imgsz, int) else max(trainer.args.imgsz)
        example = torch.zeros(1, 3, imgsz, imgsz, device=trainer.device)   # (1, 3, imgsz, imgsz): FLOPs at imgsz
        settings = {**stop_rule(trainer.epochs), "attention": "whole", **self.settings}
        self._stack = contextlib.ExitStack()
        self.trainer = trainer
        self.pruner = self._stack.enter_context(attach(
            model, example, num_classes=None, epochs=trainer.epochs, runs_dir=self.runs_dir,
            name=self.name or _model_name(model),
            metric=Metric(metric), target=self.target, device=trainer.device.type, **settings))
        self.run_dir = self.pruner.store.dir
        self._watch(trainer.optimizer)

    def on_train_end(self, trainer) -> None:
        self._close()                                     # exports model.pt, records "finished"

    def teardown(self, trainer) -> None:
        """Ultralytics' finally: a run still open here did not reach on_train_end, so the trainer raised."""
        if self.pruner is not None:
            self._close(RuntimeError("Ultralytics' trainer stopped before the end of training (its error is "
                                     "above in the console)"))

    # ---------------------------------------------------------------- the method's steps
    def on_train_epoch_start(self, trainer) -> None:
        if self.pruner is not None:
            self.pruner.begin_epoch(trainer.epoch)        # 1. search M_t, set the shrink's strength

    def _after_step(self, optimizer, args, kwargs) -> None:
        """After every optimiser step: 2. shrink the marked slices; studio commands (a cancel stops the fit)."""
        if self.pruner is None:
            return
        try:
            self.pruner.after_step(float(optimizer.param_groups[self._weights]["lr"]))
        except Cancelled as e:
            self._close(e)
            self.trainer.stop = True                      # Ultralytics stops between batches

    def on_fit_epoch_end(self, trainer) -> None:
        if self.pruner is None:
            return
        metrics = trainer.metrics
        losses = [float(v) for k, v in metrics.items() if k.startswith("val/")]
        tloss = trainer.tloss
        train_loss = None if tloss is None else float(sum(tloss.values()) if isinstance(tloss, dict) else tloss.sum())
        pruned = self.pruner.end_epoch(                   # 3. record the epoch, 4. prune if the stop rule fires
            trainer.epoch, train_loss=train_loss, train_acc=None, val_loss=sum(losses) if losses else None,
            val_acc=100.0 * float(metrics[self._metric_key]),
            lr=float(trainer.optimizer.param_groups[self._weights]["lr"]))
        if pruned:
            self._rebuild(trainer)

    # ---------------------------------------------------------------- after the prune
    def _rebuild(self, trainer) -> None:
        """The EMA pruned alike, the optimiser and scheduler rebuilt on the pruned tensors, best reset."""
        model = unwrap_model(trainer.model)
        if trainer.ema is not None:
            ema = trainer.ema.ema
            frozen = [p for p in ema.parameters() if not p.requires_grad]
            for p in frozen:                              # Torch-Pruning traces through autograd
                p.requires_grad_(True)
            replay_history(ema, self.pruner.net.graph.pruning_history(), self.pruner.net.example)
            for p in ema.parameters():
                p.requires_grad_(False)
            if hasattr(trainer.ema, "_pairs"):            # Ultralytics caches its (ema, model) tensor pairs on
                trainer.ema._pairs = None                 # the first update: the prune replaced them all
        trainer.optimizer = regrouped(trainer.optimizer, self._names, model)
        trainer._setup_scheduler()                        # Ultralytics' own LambdaLR on the new optimiser
        trainer.scheduler.last_epoch = trainer.epoch      # its next step (next epoch's start) is epoch + 1
        trainer.best_fitness = None                       # best.pt: the best pruned model, not a dense one
        trainer.stopper.best_fitness, trainer.stopper.best_epoch = 0.0, trainer.epoch
        self._watch(trainer.optimizer)

    def _watch(self, optimizer: torch.optim.Optimizer) -> None:
        """Shrink after each of this optimiser's steps; remember which group holds the pruned weights
        (its LR is the shrink's) and each parameter's group by name (the prune replaces the tensors)."""
        if self._hook is not None:
            self._hook.remove()
        model = unwrap_model(self.trainer.model)
        group_of = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        self._names = {n: group_of[id(p)] for n, p in model.named_parameters() if id(p) in group_of}
        self._weights = group_of.get(id(self.pruner.net.groups[0].members[0].weight), 0)
        self._hook = optimizer.register_step_post_hook(self._after_step)

    def _close(self, exception: BaseException | None = None) -> None:
        stack, self._stack, self.pruner = self._stack, None, None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        leave(stack, exception)


def _model_name(model: torch.nn.Module) -> str:
    """'yolov8n' for a model built from yolov8n.yaml (or its weights), else its class name."""
    built_from = (getattr(model, "yaml", None) or {}).get("yaml_file")
    return Path(built_from).stem if built_from else type(model).__name__


def regrouped(old: torch.optim.Optimizer, group_of: dict[str, int], model: torch.nn.Module) -> torch.optim.Optimizer:
    """A new optimiser of old's class over model's (pruned) parameters, each in the group its name was
    in, every group with old's settings (lr, initial_lr, momentum, weight_decay, ...); moments start afresh."""
    groups = [dict({k: v for k, v in g.items() if k != "params"}, params=[]) for g in old.param_groups]
    for name, p in model.named_parameters():
        if name in group_of:
            groups[group_of[name]]["params"].append(p)
    # the constructor's own arguments: from defaults (AdamW's hold a key its __init__ refuses), or kept as
    # attributes outside the groups (MuSGD's muon and sgd)
    accepted = [k for k in inspect.signature(type(old)).parameters if k != "params"]
    kwargs = {k: old.defaults[k] if k in old.defaults else getattr(old, k) for k in accepted
              if k in old.defaults or k in vars(old)}
    return type(old)(groups, **kwargs)
