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

import secrets
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from . import saliency as sal
from .commands import Cancelled, Commands
from .config import Config, ConfigError
from .costs import cost_table
from .data import check_dataset, load_dataset
from .export import atomic_save, export_model
from .flops import build_cost_model
from .groups import build_graph, build_groups, find_classifier, prune_groups
from .models import build_model
from .regularizer import Shrinker
from .schedule import auto_sl_start, fixed_sl_start, learning_rate, reg_strength, schedule_epoch, shrink_lr
from .selection import select
from .stability import early_bird_distance, psi_raw, smoothed
from .store import RunStore, runs_root
from .train import evaluate, train_epoch


def new_run_id(cfg: Config) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset or cfg.model}-{secrets.token_hex(2)}"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible: use --set device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_root(root: str | Path | None) -> Path:
    """The runs folder, created if needed; ConfigError if it cannot be used."""
    path = runs_root(None if root is None else str(root))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{secrets.token_hex(4)}"
        probe.write_text("")
        probe.unlink()
        list(path.iterdir())
    except OSError as e:
        raise ConfigError(f"runs folder {str(path)!r} is not usable ({e.strerror or e}): "
                          f"pass --runs-dir DIR or set OSP_RUNS_DIR to a writable folder") from None
    return path


class Run:
    """Validates everything up front (ConfigError, nothing written), then `execute()` does the cycle."""

    def __init__(self, cfg: Config, runs_dir: str | Path | None = None, run_id: str | None = None) -> None:
        self.cfg = cfg.validate()
        self.device = resolve_device(cfg.device)
        check_dataset(cfg)
        self.root = prepare_root(runs_dir)
        self.run_id = run_id or new_run_id(cfg)
        self.dir = self.root / self.run_id
        self.commands = Commands(cfg.threshold)
        self.status = "created"
        self.error: str | None = None
        self.data = None
        self.store_ready = threading.Event()          # set once run.db exists (or the run could not start)

    def prepare(self) -> None:
        """Load the dataset before any folder exists: a malformed dataset is a ConfigError, not a run."""
        if self.data is not None:
            return
        try:
            self.data = load_dataset(self.cfg)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"dataset {self.cfg.dataset!r} under {self.cfg.data_root!r} could not be read "
                              f"({type(e).__name__}: {e}): check the folder or re-download it") from None

    # ---------------------------------------------------------------- the cycle
    def execute(self, log=None) -> str:
        """Run the whole cycle in this thread; returns the terminal status. `log(str)` gets progress lines."""
        cfg, dev = self.cfg, self.device
        self.prepare()
        versions = {"torch": torch.__version__, "torch_pruning": _version("torch_pruning")}
        try:
            store = RunStore.create(self.dir, self.run_id, cfg.to_json(), versions, str(dev), cfg.threshold,
                                    cfg.dataset)
        finally:
            self.store_ready.set()
        self.store, self.status = store, "running"
        t0 = time.time()
        try:
            self._cycle(store, log or (lambda s: None))
            self.status = "finished"
            store.event("finished", f"finished in {time.time() - t0:.1f} s")
        except Cancelled:
            self.status = "cancelled"
            store.event("cancelled", "cancelled by the user")
        except Exception as e:  # the run fails, keeping every completed epoch
            self.status, self.error = "failed", f"{type(e).__name__}: {e}"
            store.event("failed", self.error, trace=traceback.format_exc())
        finally:
            store.update_run(status=self.status, error=self.error, ended=time.time(), heartbeat=time.time())
            store.close()
        return self.status

    def _cycle(self, store: RunStore, log) -> None:
        cfg, dev = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        train, val, info = self.data
        if hasattr(train, "to"):
            train, val = train.to(dev), val.to(dev)
        amp = cfg.amp and dev.type == "cuda"
        cl = cfg.channels_last and dev.type == "cuda"
        model = build_model(cfg.model, info.num_classes, info.image_size, info.in_channels).to(dev)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        example = torch.zeros(1, info.in_channels, info.image_size, info.image_size, device=dev)
        graph = build_graph(model, example)
        groups = build_groups(model, graph, find_classifier(model, info.num_classes))
        cost = build_cost_model(model, groups, example)
        _, pi = cost_table(model, graph, groups, cost, example, cfg.variant)
        shrinker = Shrinker(groups)
        store.write_groups([(g.name, g.size, g.layers) for g in groups])
        store.update_run(dataset=info.label, phase="dense")
        store.event("started", f"{cfg.model} on {info.label}, {len(groups)} groups, "
                               f"{cost.dense_flops / 1e6:.2f} M FLOPs dense, device {dev}, variant {cfg.variant}",
                    epoch=0, variant=cfg.variant)
        arch = dict(model=cfg.model, num_classes=info.num_classes, image_size=info.image_size,
                    in_channels=info.in_channels)

        optimizer = self._optimizer(model)
        history, raw, smooth_by_epoch = [], [], {}
        t_sl_start = None if cfg.sl_auto or cfg.baseline else fixed_sl_start(cfg)
        pruned, model_counts, phase = False, cost.sizes.copy(), "dense"
        n_iter = len(train)
        for epoch in range(cfg.epochs):
            t_start = time.time()
            row: dict = dict(epoch=epoch, dense_flops=cost.dense_flops, dense_params=cost.dense_params)
            masks = scores = None
            # 1. search the candidate sub-network at the start of the epoch
            if not pruned and not cfg.baseline and epoch >= cfg.monitor_start:
                scores = sal.all_saliency(groups)
                selection = select(sal.weighted_saliency(scores, pi), cost, cfg.target, cfg.l_max, cfg.l_k,
                                   cfg.variant)
                masks = selection.keep
                history.append(masks)
                raw.append(psi_raw(history))
                smooth_by_epoch[epoch] = smoothed(raw)
                shrinker.set_marked(masks)
                row.update(psi_raw=raw[-1], psi_smoothed=smooth_by_epoch[epoch], eb_distance=early_bird_distance(history),
                           cand_flops=selection.flops, cand_params=selection.params, cand_reduction=selection.reduction)
                if t_sl_start is None and auto_sl_start(epoch, smooth_by_epoch):
                    t_sl_start = epoch
                    store.event("sl_start", f"regulariser starts automatically at epoch {epoch}", epoch=epoch)
                    store.update_run(t_sl_start=epoch)
            # 2. train one epoch, shrinking the marked slices when the regulariser is on
            reg = 0.0 if pruned else reg_strength(cfg, epoch, t_sl_start)
            new_phase = "pruned" if pruned else ("sparsity" if reg > 0 else "dense")
            if new_phase != phase:
                phase = new_phase
                store.update_run(phase=phase, t_sl_start=t_sl_start)
                store.event("phase", f"phase {phase} from epoch {epoch}", epoch=epoch, phase=phase)
            position = schedule_epoch(cfg, epoch, pruned)              # where this epoch sits in the LR cycle
            stats = train_epoch(
                model, train, optimizer, lambda it: learning_rate(cfg, position, it, n_iter),
                (lambda it: shrinker.step(reg * shrink_lr(cfg, position, it, n_iter))) if reg > 0 else (lambda it: None),
                lambda: self._between_batches(store), dev, amp, cl, epoch)
            val_stats = evaluate(model, val, dev, amp, cl)
            row.update(phase=phase, train_loss=stats.loss, train_acc=stats.acc, val_loss=val_stats.loss,
                       val_acc=val_stats.acc, lr=learning_rate(cfg, position, 0, n_iter), reg=reg,
                       reg_penalty=shrinker.penalty() if reg > 0 else None,
                       model_flops=cost.flops(model_counts), model_params=cost.params(model_counts))
            self._log_commands(store, epoch)
            # 4. the stop rule, after training epoch t
            reason = None if pruned or cfg.baseline else self._prune_reason(epoch, smooth_by_epoch.get(epoch))
            row["epoch_seconds"] = time.time() - t_start
            store.write_epoch(row, masks, scores)
            log(_progress_line(row, cfg.epochs))
            if reason is not None:
                keep = masks if masks is not None else self._search_now(groups, pi, cost)
                prune_groups(graph, groups, [torch.from_numpy(k) for k in keep])
                pruned, phase = True, "pruned"
                model_counts = np.array([int(k.sum()) for k in keep], dtype=np.int64)
                optimizer = self._optimizer(model)
                after = evaluate(model, val, dev, amp, cl)
                store.update_run(t_star=epoch, prune_reason=reason, phase="pruned")
                store.event("prune", f"pruned after epoch {epoch} ({reason}): "
                                     f"{cost.flops(model_counts) / 1e6:.2f} M FLOPs, accuracy {val_stats.acc:.2f} -> "
                                     f"{after.acc:.2f} %", epoch=epoch, reason=reason, acc_after=after.acc)
            atomic_save({"epoch": epoch, "model": model.state_dict(), "pruned": pruned,
                         "pruning_history": graph.pruning_history() if pruned else []}, self.dir / "checkpoint.pt")
        export_model(model, graph.pruning_history(), arch, self.dir)
        store.event("exported", "pruned model exported to model.pt", epoch=cfg.epochs - 1)

    # ---------------------------------------------------------------- helpers
    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)

    def _between_batches(self, store: RunStore) -> None:
        store.heartbeat()
        if self.commands.paused:
            store.event("paused", "paused")
            self.commands.checkpoint(on_wait=lambda: store.heartbeat(force=True))
            if not self.commands.cancelled:
                store.event("resumed", "resumed")
        self.commands.checkpoint()

    def _log_commands(self, store: RunStore, epoch: int) -> None:
        for kind, message in self.commands.drain():
            store.event("command", message, epoch=epoch, command=kind)
            if kind == "threshold":
                store.update_run(threshold=self.commands.threshold)

    def _prune_reason(self, epoch: int, psi_smoothed: float | None) -> str | None:
        if self.commands.prune_requested:
            return "manual"
        if psi_smoothed is None:
            return None
        if self.commands.auto_prune and psi_smoothed >= self.commands.threshold:
            return "stable"
        if epoch > self.cfg.sl_end:
            return "sl_end"
        return None

    def _search_now(self, groups, pi, cost) -> list[np.ndarray]:
        scores = sal.all_saliency(groups)
        return select(sal.weighted_saliency(scores, pi), cost, self.cfg.target, self.cfg.l_max, self.cfg.l_k,
                      self.cfg.variant).keep


def _progress_line(row: dict, total: int) -> str:
    psi = row.get("psi_smoothed")
    cand = row.get("cand_flops")
    return (f"epoch {row['epoch'] + 1:>3}/{total} {row['phase']:<8} loss {row['train_loss']:.3f} "
            f"val acc {row['val_acc']:6.2f}% PSI {'  -   ' if psi is None else f'{psi:.4f}'} "
            f"candidate {'-' if cand is None else f'{cand / 1e6:.3f} M'} FLOPs  "
            f"model {row['model_flops'] / 1e6:.3f} M  ({row['epoch_seconds']:.1f} s)")


def _version(module: str) -> str:
    try:
        from importlib.metadata import version
        return version(module.replace("_", "-"))
    except Exception:
        return "unknown"
