"""The Run: one-cycle structured pruning of one network, start to finish, emitting plain data.

Epoch t (docs/method.md, 'The cycle'):
  1. from monitor_start on, before training: search M_t (saliency -> floors -> FLOPs threshold),
     score its stability (PSI, Early-Bird), mark its pruned channels for the shrink;
  2. train one epoch on the one LR schedule; from t_sl_start on, shrink marked slices every step;
  3. evaluate, write the epoch to the store, checkpoint;
  4. if the smoothed PSI >= threshold (auto-prune on), or t > sl_end, or "prune now" was pressed:
     prune M_t physically, build a new optimiser, and fine-tune from t+1 on the same schedule.
Exactly one terminal status is written: finished, failed (with the error) or cancelled.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from .branch import INIT, branch_config, checkpoint_path, keep_checkpoint, keep_initial
from .commands import Cancelled, Commands, Relay
from ..method.config import Config, ConfigError
from .data import check_dataset, load_dataset
from .kernels import guard_strided_1x1
from .distributed import World, check_ranks_agree, set_epoch, shard_loader
from ..storage.export import atomic_save
from ..storage.faults import explain
from ..method.groups import UnsupportedModel, prune_groups
from ..method.moments import MOMENTS, reached
from ..models import build_model
from ..method.network import Prunable, check_target, prepare_network
from .placement import load_weights, new_run_id, package_version, prepare_root, resolve_device
from .pruner import Pruner
from .rng import rng_state, set_rng_state
from .latency import latency_table
from .teacher import Teacher, teacher_device
from .speed import record_speed
from ..method.schedule import learning_rate, schedule_epoch, shrink_lr
from .resume import adopt
from .origin import Branch, New, Origin
from .record import RunRecord
from ..storage.store import RunStore
from ..storage.reader import RunReader
from .threads import live_cpu_runs, thread_share, usable_cores
from .train import evaluate, train_epoch
from ..storage.writer_lock import WriterLock


class Run:
    """Validates everything up front (ConfigError, nothing written), then `execute()` does the cycle.

    `model` and `data` (train, val, DatasetInfo) replace the registry's model and the config's
    dataset: the public API's way in (osp_engine.interfaces.api).
    """

    def __init__(self, cfg: Config, runs_dir: str | Path | None = None, run_id: str | None = None,
                 model: torch.nn.Module | None = None, data: tuple | None = None, world: World = World()) -> None:
        self.cfg = cfg.validate(model_registry=model is None, dataset_registry=data is None)
        self.world = world                            # torchrun's ranks (osp_engine/running/distributed.py); size 1 alone
        self.device = resolve_device(cfg.device, world.local_rank)
        if cfg.distill > 0:
            teacher_device(cfg, self.device)              # a teacher on a device that is not there: refused now
        if data is None:
            check_dataset(cfg)
        self.root = prepare_root(runs_dir)
        self.run_id = run_id or new_run_id(cfg)
        self.dir = self.root / self.run_id
        self.commands = Commands(cfg.threshold)
        self.status = "created"
        self.error: str | None = None
        self.data = data
        self.user_model = model
        self.net: Prunable | None = None
        self.origin: Origin = New()                   # how it began: new, a branch, a resume or a rewind
        self.store_ready = threading.Event()          # set once run.db exists (or the run could not start)
        self.lock: WriterLock | None = None           # a resumed run's writer lock, taken by Run.resume
        self.record: RunRecord | None = None          # its store and trackers, from execute() on
        self.moments_due: list[tuple[int, str]] = []  # (epoch, moment) reached and not yet paused at, in order

    def prepare(self, log=None) -> None:
        """Load the data and build, group, cost and check the model before any folder exists:
        a malformed dataset or a model that cannot be pruned exactly is a ConfigError, not a run.
        log(line): progress while preparing takes more than 2 s."""
        if self.net is not None:
            return
        if self.data is None:
            try:
                self.data = load_dataset(self.cfg)
            except ConfigError:
                raise
            except Exception as e:
                raise ConfigError(f"dataset {self.cfg.dataset!r} under {self.cfg.data_root!r} could not be read "
                                  f"({type(e).__name__}: {e}): check the folder or re-download it") from None
        train, _, info = self.data
        if hasattr(train, "__len__") and len(train) == 0:
            batch = getattr(train, "batch_size", None) or self.cfg.batch_size
            raise ConfigError(f"the training set gives no batch (fewer images than batch_size={batch} "
                              f"with drop_last): lower batch_size")
        torch.manual_seed(self.cfg.seed)
        try:
            model = self.user_model if self.user_model is not None else \
                build_model(self.cfg.model, info.num_classes, info.image_size, info.in_channels)
            if self.cfg.weights:
                load_weights(model, self.cfg.weights)
            model = model.to(self.device)
            example = torch.zeros(1, *info.input_shape, device=self.device)
            self.net = prepare_network(model, info.num_classes, example, self.cfg.variant, self.cfg.cost_checks, say=log,
                                       attention=self.cfg.attention)
            if self.cfg.cost == "latency" and not self.cfg.baseline:
                self.net.latency = latency_table(self.net, self.cfg, self.root, log, self.world)
            if not self.cfg.baseline:
                check_target(self.net, self.cfg.target, self.cfg.l_max, self.cfg.l_k, self.cfg.kept_multiple, self.cfg.cost)
        except UnsupportedModel as e:
            raise ConfigError(f"{self.cfg.model} on {info.label.split(' (')[0]}: {e}") from None

    def take_prepared(self, other: "Run") -> None:
        """Use `other`'s data and network, prepared from the same config and never trained (the studio's
        warm-up), instead of preparing them again: the same seed built the same weights."""
        if other.cfg != self.cfg or other.net is None or other.status != "created":
            raise ValueError("only a prepared, unstarted run of the same config can be taken")
        self.data, self.net = other.data, other.net

    @classmethod
    def resume(cls, run_dir: str | Path, world: World = World()) -> "Run":
        """The run of `run_dir`, set to continue after its last checkpointed epoch, holding its writer
        lock (osp_engine/running/resume.py); ConfigError if it cannot (RunHeld if another process writes it)."""
        path = Path(run_dir)
        adopted = adopt(path, world.leader)
        try:
            run = cls(adopted.cfg, path.parent, run_id=path.name, world=world)
        except BaseException:
            if adopted.lock is not None:
                adopted.lock.release()
            raise
        run.lock, run.origin = adopted.lock, adopted.origin
        return run

    @classmethod
    def branch(cls, parent_dir: str | Path, epoch: int, runs_dir: str | Path | None = None,
               changes: dict | None = None) -> "Run":
        """A new run that continues `parent_dir` from its kept checkpoint of `epoch`, prunes with M_epoch
        and fine-tunes to the end of the schedule (osp_engine/running/branch.py), with `changes` to its
        fine-tuning (distillation: branch.BRANCH_SETTINGS); ConfigError if it cannot."""
        parent = Path(parent_dir)
        cfg = branch_config(RunReader(parent), epoch, changes)
        try:
            ckpt = torch.load(checkpoint_path(parent, epoch), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"the checkpoint of epoch {epoch} of {parent.name} cannot be read ({type(e).__name__})") from None
        if cfg.distill > 0 and cfg.teacher == "best" and ckpt["pruner"].get("best_dense") is None:
            raise ConfigError(f"{parent.name} kept no best dense weights (it ran without distill and teacher=best): "
                              f"branch with teacher=stable, the network at the prune")
        kd = "-kd" if cfg.distill > 0 else ""
        label = new_run_id(dataclasses.replace(cfg, preset=f"{cfg.preset or cfg.model}-"
                                                          f"{'init' if epoch == INIT else f'e{epoch}'}{kd}"))
        run = cls(cfg, runs_dir if runs_dir is not None else parent.parent, run_id=label)
        run.origin = Branch(parent, epoch, ckpt)
        return run

    def release(self) -> None:
        """Free a resumed run's writer lock when it will not run after all (cancelled while queued, or
        failed to start); a run that ran frees it when its store closes."""
        if self.lock is not None:
            self.lock.release()

    # ---------------------------------------------------------------- the cycle
    def execute(self, log=None) -> str:
        """Run the whole cycle in this thread; returns the terminal status. `log(str)` gets progress lines."""
        versions = {"torch": torch.__version__, "torch_pruning": package_version("torch_pruning")}
        try:
            self.prepare()
            record = RunRecord.begin(self, versions)
        except BaseException:
            self.release()
            raise
        finally:
            self.store_ready.set()
        self.record, self.status = record, "running"
        store, t0 = record.store, time.time()
        try:
            self._cycle(store, log or (lambda s: None))
            self.status = "finished"
        except Cancelled:
            self.status, self.error = "cancelled", self.commands.reason
        except BaseException as e:  # the run fails (or is interrupted), keeping every completed epoch
            interrupted = isinstance(e, (KeyboardInterrupt, SystemExit))
            self.status = "cancelled" if interrupted else "failed"
            self.error = f"interrupted ({type(e).__name__})" if interrupted else \
                explain(e, self.dir) or f"{type(e).__name__}: {e}"
            self.trace = traceback.format_exc()
            if interrupted:
                self._end(t0)
                raise
        self._end(t0)
        return self.status

    def _end(self, t0: float) -> None:
        message = {"finished": f"finished in {time.time() - t0:.1f} s"}.get(self.status, self.error)
        self.record.end(self.status, self.error, message, getattr(self, "trace", None))

    def _cycle(self, store: RunStore, log) -> None:
        cfg, dev, world = self.cfg, self.device, self.world
        np.random.seed(cfg.seed)
        train, val, info = self.data
        if hasattr(train, "to"):
            train, val = train.to(dev), val.to(dev)
        train = shard_loader(train, world, cfg)
        gpu_path = dev.type == "cuda" or cfg.gpu_path           # on CPU only when asked: CI runs CUDA's lines
        amp, cl = cfg.amp and gpu_path, cfg.channels_last and gpu_path
        net = self.net
        model = self._layout(net.model, cl)
        guard_strided_1x1(model)                          # oneDNN's AVX2 kernel for them corrupts the heap (kernels.py)
        pruner = Pruner(cfg if world.leader else dataclasses.replace(cfg, candidate_every=0), net, store,
                        self.commands, evaluate=lambda m: evaluate(m, val, dev, amp, cl, on_batch=store.heartbeat).acc,
                        world=world)
        pruner.tracking = self.record.tracking
        if isinstance(self.origin, New):
            self.record.started(self, info, amp, cl)
            if cfg.keep_checkpoints > 0 and world.leader:  # the untrained network: a branch point too
                keep_initial(self.dir, {**pruner.checkpoint(INIT), "optimizer": None, "rng": rng_state(train)})
        optimizer = self.optimizer_for(model)
        start = 0

        def save(ckpt: dict) -> None:                     # epoch t's checkpoint, before epoch t is committed
            if not world.leader:
                return
            pruned_now = (pruner.prune_record or {}).get("epoch") == ckpt["epoch"]
            ckpt["optimizer"] = None if pruned_now else optimizer.state_dict()     # after a prune: a fresh one
            ckpt["rng"] = rng_state(train)
            atomic_save(ckpt, self.dir / "checkpoint.pt")
            if not ckpt["pruned"] and ckpt["pruner"]["masks"] is not None:    # a searched epoch: a branch point
                keep_checkpoint(self.dir, ckpt["epoch"], cfg.keep_checkpoints)

        if self.origin.checkpoint is not None:
            optimizer, start = self._restore(self.origin.checkpoint, pruner, model, train, store)
            self._layout(model, cl)                       # a resumed pruned model was pruned again just now
        if isinstance(self.origin, Branch) and start == cfg.branch_epoch + 1 and not pruner.pruned:
            pruner.prune_at(cfg.branch_epoch, save)        # a branch: "Prune now" pressed during epoch t
            optimizer = self.optimizer_for(self._layout(model, cl))
        trained = world.wrap(model, dev)                  # what a step runs: the model, or DDP around it
        self.relay = Relay(store, self.commands)
        self.relay.poll(force=True)                       # publish the controls: the run can be steered from now
        n_iter = len(train)
        previous = None                                   # the last epoch's row, for the moments it reached

        for epoch in range(start, cfg.epochs):
            self._share_threads(store, epoch)
            set_epoch(train, epoch)
            # 1. search the candidate sub-network at the start of the epoch (rank 0's, on every rank)
            pruner.begin_epoch(epoch)
            # 2. train one epoch on the one LR cycle, shrinking the marked slices after every step
            position = schedule_epoch(cfg, epoch, pruner.pruned)       # where this epoch sits in the LR cycle
            stats = train_epoch(
                trained, train, optimizer, lambda it: learning_rate(cfg, position, it, n_iter),
                lambda it: pruner.after_step(shrink_lr(cfg, position, it, n_iter)),
                lambda: self._between_batches(store), dev, amp, cl, epoch,
                loss_of=None if pruner.teacher is None else pruner.teacher.loss)
            # 3. evaluate and store the epoch; 4. prune when the stop rule fires, with a new optimiser
            val_stats = evaluate(model, val, dev, amp, cl, on_batch=lambda: self._between_batches(store))
            self._share_commands()
            pruned = pruner.end_epoch(epoch, world.mean(stats.loss), world.mean(stats.acc), val_stats.loss,
                                      val_stats.acc, learning_rate(cfg, position, 0, n_iter), save=save)
            if pruned:
                check_ranks_agree(world, store, epoch, pruner.kept, model)
                optimizer = self.optimizer_for(self._layout(model, cl))     # the pruned tensors are new
                trained = world.wrap(model, dev)
            # 5. a lesson: pause right after an epoch that reached a moment worth explaining
            self._pause_at_moments(store, epoch, previous, pruner.row, pruned)
            previous = dict(pruner.row)
            log(_progress_line(pruner.row, cfg.epochs))
        if world.leader:                                  # 6. export the pruned network, and time it
            self._finish(pruner, store, info)

    def _finish(self, pruner: Pruner, store: RunStore, info) -> None:
        """Export model.pt (with what load_pruned needs to rebuild it; Pruner.finish), then measure its speed."""
        cfg = self.cfg
        arch = dict(model=cfg.model, num_classes=info.num_classes, image_size=info.image_size,
                    in_channels=info.in_channels, input_shape=list(info.input_shape), custom=self.user_model is not None)
        pruner.finish(arch)
        if cfg.speed_budget_s > 0 and self.user_model is None:
            record_speed(store, self.dir, arch, self.device, cfg.speed_budget_s, cfg.epochs - 1)

    def _restore(self, ckpt: dict, pruner: Pruner, model: torch.nn.Module, train, store: RunStore):
        """Put model, optimiser, method state and random states back as they were after epoch t; commit
        epoch t, and the prune of epoch t, if the process died between its checkpoint and their commit.
        Returns (optimizer, t + 1)."""
        state = ckpt["pruner"]
        if ckpt.get("teacher") is not None:               # the dense network at the prune, before ours is pruned again
            pruner.teacher = Teacher.restored(self.net.model, ckpt["teacher"], self.cfg)
        if ckpt["pruned"]:
            prune_groups(self.net.graph, self.net.groups, state["keep"])
        model.load_state_dict(ckpt["model"])
        optimizer = self.optimizer_for(model)
        if ckpt["optimizer"] is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        pruner.load_state(state)
        set_rng_state(ckpt["rng"], train)
        reader = RunReader(self.dir)
        if reader.last_epoch() < ckpt["epoch"]:
            store.write_epoch(state["row"], *[None if a is None else [t.numpy() for t in a]
                                              for a in (state["masks"], state["scores"])])
        if state["prune"] is not None and reader.info()["t_star"] is None:   # killed before the prune's record
            pruner.record_prune(state["prune"])                              # (found by benchmarks/soak_faults.py)
        return optimizer, ckpt["epoch"] + 1

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _layout(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
        """The model in channels_last when asked: at the start and again after every structural change
        (a physical prune makes new, contiguous tensors)."""
        return model.to(memory_format=torch.channels_last) if channels_last else model

    def optimizer_for(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The run's SGD on `model`'s current tensors (at the start, and after the prune replaces them)."""
        cfg = self.cfg
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)

    def _share_threads(self, store: RunStore, epoch: int) -> None:
        """On CPU, take this epoch's share of the cores (threads.py); a change is an event of the run."""
        if self.device.type != "cpu":
            return
        cores, live = usable_cores(), live_cpu_runs(self.root) * self.world.size   # torchrun: one per rank
        ceiling = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or cores
        n = thread_share(self.cfg.threads, ceiling, live, cores)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
            why = "the threads setting" if self.cfg.threads else f"{cores} cores shared by {live} live CPU run(s)"
            store.event("threads", f"{n} CPU thread(s): {why}", epoch=epoch, threads=n)

    def _between_batches(self, store: RunStore) -> None:
        """Heartbeat, commands from other processes, pause; under torchrun a cancel on rank 0 stops every
        rank at the same batch (rank 0 pausing holds the others at this batch's collective)."""
        store.heartbeat()
        self.relay.poll()                                 # commands sent from another process (the studio)
        while self.commands.paused:
            store.event("paused", "paused")
            self.commands.wait_while_paused(on_wait=lambda: (store.heartbeat(force=True), self.relay.poll(force=True)))
            if self.commands.cancelled:
                break
            store.event("resumed", "resumed")
            self._next_moment(store)                      # another moment of the same epoch: pause again
        if self.world.any(self.commands.cancelled) and not self.commands.cancelled:
            self.commands.cancel("cancelled on rank 0")
        self.commands.checkpoint()

    def _pause_at_moments(self, store: RunStore, epoch: int, previous: dict | None, row: dict, pruned: bool) -> None:
        """Pause at the next batch if epoch `epoch` reached a moment of `pause_at` (a `moment` event names it).
        Moments reached at the same epoch (the PSI near its threshold and the prune, say) pause one at a
        time, in order: the lesson explains each."""
        if self.world.leader and epoch + 1 < self.cfg.epochs:
            self.moments_due += [(epoch, m) for m in reached(previous, row, pruned, self.commands.threshold)
                                 if m in self.cfg.pauses]
            self._next_moment(store)

    def _next_moment(self, store: RunStore) -> None:
        """Record the next moment due and pause for it, if one is due."""
        if self.moments_due:
            epoch, moment = self.moments_due.pop(0)
            store.event("moment", f"{moment}: {MOMENTS[moment]}", epoch=epoch, moment=moment)
            self.commands.pause()

    def _share_commands(self) -> None:
        """At the epoch's end, before the stop rule: every rank takes rank 0's prune now, threshold and
        auto-prune, so every rank decides the same prune at the same epoch."""
        if self.world.size == 1:
            return
        state = self.world.broadcast(self.commands.snapshot() if self.world.leader else None)
        if not self.world.leader:
            self.commands.adopt(state)


def _progress_line(row: dict, total: int) -> str:
    psi = row.get("psi_smoothed")
    cand = row.get("cand_flops")
    return (f"epoch {row['epoch']:>3} of 0-{total - 1} {row['phase']:<8} loss {row['train_loss']:.3f} "
            f"val acc {row['val_acc']:6.2f}% PSI {'  -   ' if psi is None else f'{psi:.4f}'} "
            f"candidate {'-' if cand is None else f'{cand / 1e6:.3f} M'} FLOPs  "
            f"model {row['model_flops'] / 1e6:.3f} M  ({row['epoch_seconds']:.1f} s)")
