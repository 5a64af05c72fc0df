"""One-cycle structured pruning inside a PyTorch Lightning `Trainer`: add `OneCyclePruning` to its callbacks.

    trainer = L.Trainer(max_epochs=40, callbacks=[OneCyclePruning(target=0.5)])
    trainer.fit(module, train_loader, val_loader)

The LightningModule's network (the module itself, or its attribute `network=`) is searched at every
epoch's start, shrunk after every optimiser step, pruned at the stable epoch and fine-tuned to the end
of the same schedule; the run is an ordinary run folder that the studio shows and steers (pause,
cancel, prune now). After the prune the optimisers are rebuilt by calling `configure_optimizers` again,
and each LR scheduler is stepped as many times as the old one was, so the schedule goes on where it was.

A pruned fit's checkpoints carry the structure as data (`checkpoint["osp"]`: the pruning history and
the input shape, never a pickled module). A module that also derives from `PrunedCheckpoints` loads them:
`MyModule.load_from_checkpoint("last.ckpt")` is the pruned network, and `trainer.fit(module,
ckpt_path="last.ckpt")` with this callback continues the fit and its run folder (checkpoints taken at
epoch ends, as ModelCheckpoint takes them).

Contract with the module: its forward maps a batch of images to logits; it logs the validation accuracy
(`accuracy=`, default "val_acc", a fraction in [0, 1] unless accuracy_in_percent=True) and may log the
training loss (`loss=`, default "train_loss"); `example_input_array` (or `example=`) is one batch of
inputs. Single device only (the prune changes the parameters a DDP wrapper holds). osp's figures
(osp/psi_smoothed, osp/candidate_reduction, osp/model_flops) go to Lightning's own loggers too.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from ..interfaces.api import attach, leave
from ..method.distill import backward_soft_share
from ..method.config import ConfigError
from ..running.commands import Cancelled
from ..storage.export import replay_history
from ..storage.metric import Metric

try:
    import lightning.pytorch as pl
except ImportError as e:                                  # one line, not a traceback into Lightning
    raise ImportError("osp_engine.integrations.lightning needs PyTorch Lightning: pip install lightning") from e

LOGGED = (("psi_smoothed", "psi_smoothed"), ("candidate_reduction", "cand_reduction"), ("model_flops", "model_flops"))


class OneCyclePruning(pl.Callback):
    def __init__(self, example: torch.Tensor | None = None, *, num_classes: int | None = None,
                 network: str | None = None, accuracy: str = "val_acc", loss: str = "train_loss",
                 accuracy_in_percent: bool = False, runs_dir: str | Path | None = None, name: str | None = None,
                 metric: Metric | str | None = None, **settings) -> None:
        """settings: any osp Config field (target=0.5, threshold=0.99, sl_start=..., log_to="mlflow", ...);
        epochs is the Trainer's max_epochs. num_classes: inferred from the network's output if not given.
        metric: what the logged `accuracy` figure is called in the studio (default accuracy, in percent)."""
        self.example, self.num_classes, self.network = example, num_classes, network
        self.accuracy, self.loss, self.scale = accuracy, loss, 1.0 if accuracy_in_percent else 100.0
        self.runs_dir, self.name, self.settings, self.metric = runs_dir, name, settings, metric
        self.pruner = None
        self.run_dir: Path | None = None
        self._epoch_lr = 0.0
        self._stack: contextlib.ExitStack | None = None
        self._done = -1                                   # the last epoch whose end the pruner recorded
        self._resume: dict | None = None                  # the callback's state in the checkpoint fit() resumes
        self._restored: dict | None = None                # that checkpoint's pruned weights, optimisers, schedulers
        self._hook = None                                 # distillation: the hook seeing a step's forward
        self._seen: tuple | None = None                   # (input batch, logits) of the step's forward

    # ---------------------------------------------------------------- start and end
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.world_size > 1:
            raise ConfigError("OneCyclePruning runs on one device: the prune changes the parameters DDP holds")
        if not trainer.max_epochs or trainer.max_epochs < 0:
            raise ConfigError("OneCyclePruning needs Trainer(max_epochs=N): the one LR cycle has a known length")
        net = self._net(pl_module)
        example = self.example if self.example is not None else pl_module.example_input_array
        if not isinstance(example, torch.Tensor):
            raise ConfigError("OneCyclePruning needs one batch of inputs: pass example=... or set the module's "
                              "example_input_array")
        example = example[:1].to(pl_module.device)
        if self.num_classes is None:
            with torch.no_grad():
                self.num_classes = int(net.eval()(example).shape[-1])
            net.train()
        self._shape = list(example.shape[1:])
        for checkpointing in trainer.checkpoint_callbacks:   # after this callback's record of the epoch, so that a
            if getattr(checkpointing, "_save_on_train_epoch_end", False) is None:   # checkpoint holds it: at the
                checkpointing._save_on_train_epoch_end = True                         # epoch's end, not validation's
        self._stack = contextlib.ExitStack()
        self.pruner = self._stack.enter_context(attach(
            net, example, num_classes=self.num_classes, epochs=trainer.max_epochs, runs_dir=self.runs_dir,
            name=self.name or type(pl_module).__name__, device=pl_module.device.type, metric=self.metric,
            resume=self._resume, **self.settings))
        self.run_dir = self.pruner.store.dir
        if self._restored is not None:                    # resumed after the prune: the weights it had then
            self._reload(trainer, pl_module)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._close()                                     # exports model.pt, records "finished"

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._close(exception)                            # records "failed" with the error

    # ---------------------------------------------------------------- the method's steps
    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.pruner is not None:
            self.pruner.begin_epoch(trainer.current_epoch)   # 1. search M_t, set the shrink's strength
            self._epoch_lr = _lr(trainer)                 # the epoch's LR (Lightning steps epoch schedulers
                                                          # before on_train_epoch_end)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.pruner is not None and self.pruner.teacher is not None:   # distillation: see the step's forward
            self._seen = None
            self._hook = self._net(pl_module).register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        """The training step's first forward of the network: its input batch and logits."""
        self._seen = (inputs[0], output)
        self._hook.remove()

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        """distill > 0 after the prune: the module's loss L becomes (1 - alpha) L + alpha T^2 KL(teacher ||
        student) by backpropagating the difference first (method/distill.backward_soft_share); `loss`
        arrives divided by the accumulation steps and multiplied by a 16-bit loss scaler's scale."""
        seen, self._seen = self._seen, None
        if seen is None or self.pruner is None or self.pruner.teacher is None:
            return
        x, logits = seen
        teacher = self.pruner.teacher
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        scale = (float(scaler.get_scale()) if scaler is not None else 1.0) / trainer.accumulate_grad_batches
        backward_soft_share(loss, logits, teacher.logits(x), teacher.alpha, teacher.temperature, scale)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.pruner is None:
            return
        try:
            self.pruner.after_step(_lr(trainer))          # 2. shrink the marked slices; studio commands
        except Cancelled as e:                            # cancelled from the studio: stop the fit cleanly
            self._close(e)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.pruner is None:
            return
        metrics = trainer.callback_metrics
        if self.accuracy not in metrics:
            raise ConfigError(f"OneCyclePruning: the module logs no {self.accuracy!r} (log the validation accuracy, "
                              f"or pass accuracy='<its name>')")
        loss = metrics.get(self.loss)
        pruned = self.pruner.end_epoch(                   # 3. record the epoch, 4. prune if the stop rule fires
            trainer.current_epoch, train_loss=None if loss is None else float(loss), train_acc=None,
            val_loss=float(metrics["val_loss"]) if "val_loss" in metrics else None,
            val_acc=float(metrics[self.accuracy]) * self.scale, lr=self._epoch_lr)
        self._done = trainer.current_epoch
        for name, column in LOGGED:
            if self.pruner.row.get(column) is not None:
                pl_module.log(f"osp/{name}", float(self.pruner.row[column]))
        if pruned:
            rebuild_optimizers(trainer)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Lightning keeps this in every checkpoint: the run folder and the method's state after the last
        recorded epoch (tensors and plain data)."""
        if self.pruner is None:
            return {}
        return {"run_dir": str(self.run_dir), "epoch": self._done, "pruner": self.pruner.state(),
                "teacher": None if self.pruner.teacher is None else self.pruner.teacher.state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = dict(state_dict) if state_dict else None   # on_train_start continues that run

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """The structure as data beside the weights: what PrunedCheckpoints needs to rebuild the network."""
        if self.pruner is not None:
            net = self.pruner.net
            checkpoint["osp"] = {"network": self.network or "", "input_shape": self._shape,
                                 "pruning_history": net.graph.pruning_history() if self.pruner.pruned else []}

    def defer(self, checkpoint: dict, pl_module: "pl.LightningModule") -> None:
        """fit(ckpt_path=...) of a pruned fit: keep the checkpoint's pruned weights, optimiser and scheduler
        states for on_train_start (which prunes the dense module as the run did), and let Lightning load
        the module's own dense weights meanwhile."""
        self._restored = {"state_dict": checkpoint["state_dict"], "optimizers": checkpoint.get("optimizer_states", []),
                          "schedulers": checkpoint.get("lr_schedulers", [])}
        checkpoint["state_dict"] = pl_module.state_dict()

    def _reload(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        restored, self._restored = self._restored, None
        pl_module.load_state_dict(restored["state_dict"])
        trainer.strategy.setup_optimizers(trainer)       # over the pruned tensors, then as they were saved
        for optimizer, state in zip(trainer.optimizers, restored["optimizers"]):
            optimizer.load_state_dict(state)
        for config, state in zip(trainer.lr_scheduler_configs, restored["schedulers"]):
            config.scheduler.load_state_dict(state)

    # ---------------------------------------------------------------- helpers
    def _net(self, pl_module: "pl.LightningModule") -> torch.nn.Module:
        if self.network is None:
            return pl_module
        net = getattr(pl_module, self.network, None)
        if not isinstance(net, torch.nn.Module):
            raise ConfigError(f"OneCyclePruning(network={self.network!r}): the module has no such sub-module")
        return net

    def _close(self, exception: BaseException | None = None) -> None:
        stack, self._stack, self.pruner = self._stack, None, None
        leave(stack, exception)


class PrunedCheckpoints:
    """Mix into a LightningModule pruned by OneCyclePruning (class MyModule(PrunedCheckpoints,
    L.LightningModule)): its checkpoints then load pruned, by load_from_checkpoint and by fit(ckpt_path=...).
    An override of on_load_checkpoint must call super().on_load_checkpoint(checkpoint)."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_structure(self, checkpoint)
        super().on_load_checkpoint(checkpoint)


def restore_structure(module: "pl.LightningModule", checkpoint: dict) -> None:
    """Prune `module` (dense, as built) as the checkpoint's network was, before its weights load; inside a
    fit with OneCyclePruning that callback does it at the fit's start instead (with the run's groups)."""
    saved = checkpoint.get("osp") or {}
    if not saved.get("pruning_history"):
        return
    trainer = getattr(module, "_trainer", None)
    callback = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, OneCyclePruning)), None)
    if callback is not None:
        callback.defer(checkpoint, module)
        return
    net = module.get_submodule(saved["network"]) if saved["network"] else module
    device = next(net.parameters()).device
    replay_history(net, saved["pruning_history"], torch.zeros(1, *saved["input_shape"], device=device))


def _lr(trainer: "pl.Trainer") -> float:
    return float(trainer.optimizers[0].param_groups[0]["lr"])


def rebuild_optimizers(trainer: "pl.Trainer") -> None:
    """configure_optimizers again (the pruned network has new tensors), each scheduler brought to where
    the old one was: stepped once per epoch (this one included: Lightning steps epoch schedulers at the
    epoch's last batch) or per optimiser step already done, per its frequency. A ReduceLROnPlateau
    starts afresh (its steps depend on the metrics it saw)."""
    trainer.strategy.setup_optimizers(trainer)
    for config in trainer.lr_scheduler_configs:
        if config.reduce_on_plateau:
            continue
        done = trainer.current_epoch + 1 if config.interval == "epoch" else trainer.global_step
        with warnings.catch_warnings():                   # "scheduler.step() before optimizer.step()": on purpose
            warnings.simplefilter("ignore")
            for _ in range(done // max(config.frequency, 1)):
                config.scheduler.step()
