"""The method's epoch steps on a prepared network, writing the run store: the hooks of any training loop.

A `Pruner` owns no data and no optimiser. Whoever trains (the Run, or a researcher's own trainer)
calls, each epoch t (docs/method.md, 'The cycle'):

    pruner.begin_epoch(t)          # 1. search M_t, score its stability, mark its channels, set reg_t
    ... for every batch: optimiser.step(); pruner.after_step(lr)   # 2. shrink the marked slices
    pruned = pruner.end_epoch(t, train_loss=..., val_acc=..., ...)  # 3. store the epoch, 4. prune if due
    if pruned: optimiser = SGD(model.parameters(), ...)             # the pruned model has new tensors

and `finish()` at the end (exports model.pt). Commands from the studio or the Run (prune now,
threshold, auto-prune) arrive through `commands`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..method import saliency as sal
from .commands import Commands
from ..method.costcheck import pruned_copy
from .distributed import World, digest
from ..method.config import Config
from ..storage.export import export_model
from ..method.groups import prune_groups
from ..method.miss import Miss, explain_miss
from ..method.network import Prunable
from ..method.regularizer import Shrinker
from ..method.schedule import auto_sl_start, fixed_sl_start, reg_strength
from ..method.selection import Selection, select
from ..method.stability import early_bird_distance, psi_raw, smoothed
from ..storage.metric import ACCURACY, Metric
from ..storage.store import RunStore
from .latency import record_latency
from .teacher import Teacher


class Pruner:
    def __init__(self, cfg: Config, net: Prunable, store: RunStore, commands: Commands | None = None,
                 evaluate=None, world: World = World(), metric: Metric = ACCURACY) -> None:
        """evaluate(model): a model's validation metric (optional): the network's right after the prune, and
        the candidate's (a physically pruned copy) every `candidate_every`-th searched epoch. metric: what
        end_epoch's val_acc is (accuracy in percent unless said otherwise), for the prune's message."""
        self.cfg, self.net, self.store, self.metric = cfg, net, store, metric
        self.commands = commands or Commands(cfg.threshold)
        self.evaluate = evaluate
        self.world = world                # under torchrun: every rank uses rank 0's candidate
        self.relay = None                 # set by osp_engine.attach: commands from the studio, polled per step
        self.tracking = None              # the run's trackers (osp_engine/tracking), mirrored after each epoch
        self.shrinker = Shrinker(net.groups)
        self.history: list[list[np.ndarray]] = []
        self.raw: list[float] = []
        self.smooth_by_epoch: dict[int, float] = {}
        self.t_sl_start = None if cfg.sl_auto or cfg.baseline else fixed_sl_start(cfg)
        self.pruned, self.phase, self.reg = False, "dense", 0.0
        self.model_counts = net.cost.sizes.copy()
        self.row: dict = {}
        self.masks = self.scores = None
        self.kept: list[np.ndarray] | None = None        # the masks the prune used
        self.prune_record: dict | None = None            # epoch t's prune, for a checkpoint taken before its commit
        self.teacher: Teacher | None = None              # distill > 0: the dense network at the prune, frozen
        self.best_dense: tuple[float, dict] | None = None  # teacher=best: (metric, weights) of the best dense epoch
        self.tuning_s = 0.0                              # fine-tuning seconds with the teacher, since this process began

    # ------------------------------------------------------------------ 1. search at the epoch's start
    def begin_epoch(self, epoch: int) -> float:
        """Search M_t (from monitor_start on, until the prune), then return this epoch's shrink strength."""
        cfg, cost = self.cfg, self.net.cost
        self.t_start = time.time()
        self.row = dict(epoch=epoch, dense_flops=cost.dense_flops, dense_params=cost.dense_params)
        self.masks = self.scores = None
        self.prune_record = None
        if not self.pruned and not cfg.baseline and epoch >= cfg.monitor_start:
            self._search(epoch)
        self.reg = 0.0 if self.pruned else reg_strength(cfg, epoch, self.t_sl_start)
        phase = "pruned" if self.pruned else ("sparsity" if self.reg > 0 else "dense")
        if phase != self.phase:
            self.phase = phase
            self.store.update_run(phase=phase, t_sl_start=self.t_sl_start)
            self.store.event("phase", f"phase {phase} from epoch {epoch}", epoch=epoch, phase=phase)
        return self.reg

    def _search(self, epoch: int) -> None:
        net = self.net
        self.scores = sal.all_saliency(net.groups)
        selection = self._select(self.scores)
        self.masks = self._agreed(epoch, selection.keep)
        self.history.append(self.masks)
        self.raw.append(psi_raw(self.history))
        self.smooth_by_epoch[epoch] = smoothed(self.raw)
        self.shrinker.set_marked(self.masks)
        self.row.update(psi_raw=self.raw[-1], psi_smoothed=self.smooth_by_epoch[epoch],
                        eb_distance=early_bird_distance(self.history), cand_flops=selection.flops,
                        cand_params=selection.params, cand_reduction=selection.reduction)
        if self.t_sl_start is None and auto_sl_start(epoch, self.smooth_by_epoch):
            self.t_sl_start = epoch
            self.store.event("sl_start", f"regulariser starts automatically at epoch {epoch}", epoch=epoch)
            self.store.update_run(t_sl_start=epoch)

    def _agreed(self, epoch: int, keep: list[np.ndarray]) -> list[np.ndarray]:
        """Rank 0's candidate on every rank; a rank whose own search differed is recorded (by rank 0)."""
        if self.world.size == 1:
            return keep
        chosen = self.world.broadcast(keep)
        if self.world.any(digest(keep) != digest(chosen)):
            self.store.event("ranks", f"the ranks' searches differed at epoch {epoch}: rank 0's candidate is used",
                             epoch=epoch)
        return chosen

    # ------------------------------------------------------------------ 2. the shrink after every step
    def after_step(self, lr: float) -> None:
        """W <- W * (1 - reg_t * lr) on the marked slices; call after every optimiser step.

        In your own loop (osp_engine.attach) this is also where the studio's commands arrive: a pause
        blocks here, a cancel raises commands.Cancelled (the run is then recorded as cancelled)."""
        if self.reg > 0:
            self.shrinker.step(self.reg * lr)
        if self.relay is not None:
            self.store.heartbeat()
            self.relay.poll()
            self.commands.checkpoint(on_wait=lambda: (self.store.heartbeat(force=True), self.relay.poll(force=True)))

    # ------------------------------------------------------------------ 3. store, 4. prune when due
    def end_epoch(self, epoch: int, train_loss: float, train_acc: float | None, val_loss: float | None,
                  val_acc: float, lr: float, save=None) -> bool:
        """Record epoch t (metrics: loss, accuracy in percent) and prune if the stop rule fires; True if it did.

        save(checkpoint): called after the prune and BEFORE epoch t is committed, so a checkpoint on
        disk is never behind the database (the Run writes checkpoint.pt there).
        """
        cost = self.net.cost
        if self.relay is not None:
            self.relay.poll(force=True)
        self.row.update(phase=self.phase, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                        val_acc=val_acc, lr=lr, reg=self.reg,
                        reg_penalty=self.shrinker.penalty() if self.reg > 0 else None,
                        model_flops=cost.flops(self.model_counts), model_params=cost.params(self.model_counts))
        self._keep_best_dense(val_acc)
        if self._candidate_due(epoch):
            self._evaluate_candidate()
        reason = None if self.pruned or self.cfg.baseline else self._prune_reason(epoch)
        self.row["epoch_seconds"] = time.time() - self.t_start
        if self.teacher is not None and self.pruned:      # the fine-tuning's time, against the teacher's share
            self.tuning_s += self.row["epoch_seconds"]
        if reason is not None:
            after, miss = self._prune()
            self.prune_record = {"epoch": epoch, "reason": reason, "acc_before": val_acc, "acc_after": after,
                                 "miss": miss}
        if save is not None:
            save(self.checkpoint(epoch))
        self._log_commands(epoch)
        self.store.write_epoch(self.row, self.masks, self.scores)
        if reason is not None:
            self.record_prune(self.prune_record)
        if self.tracking is not None:                     # what was just committed, to TensorBoard / MLflow / W&B
            self.tracking.sync()
        return reason is not None

    def _keep_best_dense(self, metric: float) -> None:
        """teacher=best: a copy of the dense weights whenever the metric is the best yet (in its direction)."""
        if self.cfg.distill <= 0 or self.cfg.teacher != "best" or self.pruned or metric is None:
            return
        if self.best_dense is None or self.metric.best([self.best_dense[0], metric]) == metric != self.best_dense[0]:
            self.best_dense = (metric, {k: v.detach().clone() for k, v in self.net.model.state_dict().items()})

    def _candidate_due(self, epoch: int) -> bool:
        every = self.cfg.candidate_every
        return (self.evaluate is not None and every > 0 and self.masks is not None
                and (epoch - self.cfg.monitor_start) % every == 0)

    def _evaluate_candidate(self) -> None:
        """The candidate's accuracy as it would be right after a prune now: M_t's marked channels removed
        physically from a copy (the network itself is untouched), evaluated on the validation set."""
        t0 = time.time()
        twin = pruned_copy(self.net.model, self.net.groups, self.masks, self.net.example)
        self.row.update(cand_acc=self.evaluate(twin), cand_seconds=time.time() - t0)

    def record_prune(self, rec: dict) -> None:
        """Commit a prune: t*, its reason, and the event with the accuracy before and after."""
        before, after, m = rec["acc_before"], rec["acc_after"], self.metric
        if before is None:                                # at initialization: nothing evaluated before
            change = "untrained" if after is None else f"untrained, {m.name} {m.format(after)} once pruned"
        else:
            change = f"{m.name} {m.format(before)} -> {m.format(after)}" if after is not None \
                else f"{m.name} {m.format(before)}"
        when = "at initialization" if rec["epoch"] < 0 else f"after epoch {rec['epoch']}"
        with self.store.transaction():                    # t* and its events, or none
            self.store.update_run(t_star=rec["epoch"], prune_reason=rec["reason"], phase="pruned")
            self.store.event("prune", f"pruned {when} ({rec['reason']}): "
                                      f"{self.net.cost.flops(self.model_counts) / 1e6:.2f} M FLOPs{self._predicted()}, "
                                      f"{change}",
                             epoch=rec["epoch"], reason=rec["reason"], acc_after=after)
            if self.teacher is not None:
                self.store.event("teacher", self.teacher.describe(), epoch=rec["epoch"], **self.teacher.figures())
            if rec.get("miss"):                           # further than 0.5 pp from the target: why
                self.store.event("target", Miss(**rec["miss"]).message, epoch=rec["epoch"], **rec["miss"])

    def _predicted(self) -> str:
        """', 1.23 ms predicted' (cost=latency: the table's latency of the pruned network), or nothing."""
        if self.cfg.cost != "latency" or self.net.latency is None:
            return ""
        return f", {1e3 * self.net.latency.predict(self.model_counts):.3f} ms predicted"

    def prune_at(self, epoch: int, save=None) -> None:
        """Prune with M_t now, as "Prune now" pressed during epoch t (restored by load_state) would have at
        its end: the same masks, accuracy before and after, checkpoint, then the prune's record."""
        after, miss = self._prune()
        self.prune_record = {"epoch": epoch, "reason": "manual", "acc_before": self.row.get("val_acc"),
                             "acc_after": after, "miss": miss}
        if save is not None:
            save(self.checkpoint(epoch))
        self.record_prune(self.prune_record)

    def _prune(self) -> tuple[float | None, dict | None]:
        """Remove M_t's marked channels physically. Returns the accuracy right after (if an evaluate was
        given) and, when the reduction lies further than 0.5 pp from the target, why (method/miss.py)."""
        net = self.net
        scores, keep = self.scores, self.masks
        if keep is None:                                  # pruned before any search: search now
            scores = sal.all_saliency(net.groups)
            keep = self._agreed(-1, self._select(scores).keep)
        if self.cfg.distill > 0:                          # the teacher: the network one moment before the prune
            self.teacher = Teacher.of(net.model, self.cfg) if self.best_dense is None else \
                Teacher.restored(net.model, self.best_dense[1], self.cfg)   # teacher=best: the best dense epoch's
        prune_groups(net.graph, net.groups, [torch.from_numpy(k) for k in keep])
        self.pruned, self.phase, self.kept = True, "pruned", keep
        self.model_counts = np.array([int(k.sum()) for k in keep], dtype=np.int64)
        measure = net.measure(self.cfg.cost)
        reduction = 1.0 - measure(self.model_counts) / measure(net.cost.sizes)
        miss = explain_miss(sal.weighted_saliency(scores, net.pi), net.cost, self.cfg, reduction, measure)
        return (self.evaluate(net.model) if self.evaluate is not None else None), (miss and miss.as_dict())

    def _select(self, scores: list[np.ndarray]) -> Selection:
        """M_t from the saliency S (per group, (C_g,)): weighted by pi, searched as the config says."""
        cfg = self.cfg
        return select(sal.weighted_saliency(scores, self.net.pi), self.net.cost, cfg.target, cfg.l_max, cfg.l_k,
                      cfg.variant, cfg.kept_multiple, cfg.search, self.net.measure(cfg.cost))

    def _log_commands(self, epoch: int) -> None:
        for kind, message in self.commands.drain():
            self.store.event("command", message, epoch=epoch, command=kind)
            if kind == "threshold":
                self.store.update_run(threshold=self.commands.threshold)

    def _prune_reason(self, epoch: int) -> str | None:
        if self.commands.prune_requested:
            return "manual"
        psi = self.smooth_by_epoch.get(epoch)
        if psi is None:
            return None
        if self.commands.auto_prune and psi >= self.commands.threshold:
            return "stable"
        if epoch > self.cfg.sl_end:
            return "sl_end"
        return None

    # ------------------------------------------------------------------ the end
    def checkpoint(self, epoch: int) -> dict:
        """What a checkpoint holds after epoch t: the model, Torch-Pruning's history once pruned, the
        method's state (`state()`) and, with distillation, the teacher's weights (the dense network at the
        prune), all tensors and plain data (loadable with weights_only=True)."""
        return {"epoch": epoch, "model": self.net.model.state_dict(), "pruned": self.pruned,
                "pruning_history": self.net.graph.pruning_history() if self.pruned else [], "pruner": self.state(),
                "teacher": None if self.teacher is None else self.teacher.state()}

    def fine_tuning_loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of logits (N, classes) on the batch (x, y): the cross-entropy, and after the
        prune with distill > 0 the distillation loss from the teacher (method/distill.py). For your own
        loop (osp_engine.attach); the Run's loop calls the teacher itself."""
        if self.teacher is None:
            return torch.nn.functional.cross_entropy(logits.float(), y)
        return self.teacher.loss(logits, x, y)

    def state(self) -> dict:
        """Everything the next epochs depend on, and epoch t's record in case it was not committed."""
        def tensors(arrays):
            return None if arrays is None else [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        return {"history": [tensors(m) for m in self.history], "raw": list(self.raw),
                "smooth": {int(k): float(v) for k, v in self.smooth_by_epoch.items()},
                "t_sl_start": self.t_sl_start, "pruned": self.pruned, "phase": self.phase,
                "model_counts": [int(c) for c in self.model_counts], "keep": tensors(self.kept),
                "commands": self.commands.snapshot(), "row": dict(self.row), "masks": tensors(self.masks),
                "scores": tensors(self.scores), "prune": self.prune_record,
                "best_dense": None if self.best_dense is None or self.pruned else         # teacher=best, to come
                {"metric": self.best_dense[0], "weights": self.best_dense[1]}}

    def load_state(self, state: dict) -> None:
        """Continue from `state()`: the stability history, the regulariser's start, the prune, the controls."""
        self.history = [[m.numpy() for m in masks] for masks in state["history"]]
        self.raw = list(state["raw"])
        self.smooth_by_epoch = dict(state["smooth"])
        self.t_sl_start, self.pruned, self.phase = state["t_sl_start"], state["pruned"], state["phase"]
        self.model_counts = np.array(state["model_counts"], dtype=np.int64)
        self.kept = None if state["keep"] is None else [k.numpy() for k in state["keep"]]
        self.row = dict(state["row"])
        self.masks = None if state["masks"] is None else [m.numpy() for m in state["masks"]]
        self.scores = None if state["scores"] is None else [m.numpy() for m in state["scores"]]
        best = state.get("best_dense")
        self.best_dense = None if best is None else (best["metric"], best["weights"])
        c = state["commands"]
        self.commands.set_threshold(c["threshold"])
        self.commands.set_auto_prune(c["auto_prune"])
        if c["prune_requested"]:
            self.commands.prune_now()
        self.commands.drain()                             # restored, not new: no command events

    def finish(self, arch: dict) -> None:
        """Export the (pruned) model to model.pt (arch: what load_pruned needs to rebuild it), and record what
        the teacher cost and, with cost=latency, the pruned model's latency against the table's prediction."""
        export_model(self.net.model, self.net.graph.pruning_history(), arch, self.store.dir)
        self.store.event("exported", "pruned model exported to model.pt", epoch=self.cfg.epochs - 1)
        t = self.teacher
        if t is not None and t.calls:                     # what the teacher cost: the figures beside its description
            self.store.event("teacher", f"{t.describe()}; {t.cost(self.tuning_s)}", epoch=self.cfg.epochs - 1,
                             **t.figures(), forward_ms=1e3 * t.seconds / t.calls, steps=t.calls,
                             tuning_seconds=self.tuning_s)
        if self.cfg.cost == "latency" and self.net.latency is not None:
            record_latency(self.store, arch, self.net, self.model_counts, self.cfg, self.cfg.epochs - 1)
