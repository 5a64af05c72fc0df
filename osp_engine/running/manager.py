"""The run manager: starts runs in background threads, lists them, and forwards commands.

It holds no UI state and never imports Streamlit; the app keeps one instance per server process.
At most `per_device` runs train at once on each device (default 1: two runs sharing two CPU cores
each take longer than both one after the other); the others wait in a queue, in the order started,
and can be cancelled there. A queued run has no folder until it starts.
A run another process is writing (the command line, osp_engine.prune or attach) is steered through
its store: the command is queued in run.db and that process applies it within about a second.
A run that fails in its thread before its store could record why (a tracker that cannot start, a full
disk) is kept as a `Failure` until the studio shows it; a run that has ended is let go, with its
network and data.
Networks are built one at a time (`_building`): a build seeds PyTorch's global generator and draws its
initial weights from it, so two builds at once (the warm-up and a click, two sessions' clicks) would
interleave their draws and start from weights other than their seed gives alone.
"""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..method.config import Config
from .run import Run
from ..storage.sweep import new_sweep_label, target_sweep_configs
from ..storage.store import TERMINAL, resolve_run_dir, runs_root
from ..storage.reader import RunReader, split_runs
from ..storage.writer_lock import RunHeld, describe, holder


@dataclass(frozen=True)
class Failure:
    """A start, resume or branch that failed in its thread: which run, what was asked, why, when (epoch s)."""
    run_id: str
    what: str
    reason: str
    at: float


class RunManager:
    def __init__(self, root: str | Path | None = None, per_device: int = 1) -> None:
        self.root = runs_root(None if root is None else str(root))
        self.per_device = per_device
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[Run, threading.Thread]] = {}
        self._slots: dict[str, threading.Semaphore] = {}
        self._queue: list[Run] = []                   # started, waiting for a slot on their device
        self._failures: list[Failure] = []            # failed in their thread, not yet dismissed
        self._building = threading.Lock()             # one network built at a time: they seed one generator
        self._warm: Run | None = None                 # the warm-up's prepared run, until a start takes it

    def warm_up(self, cfg: Config) -> threading.Thread:
        """Build, group, cost and check `cfg`'s network once in a daemon thread, writing nothing, and give it
        an optimiser: the first run started afterwards skips PyTorch's and Torch-Pruning's one-time start-up
        (about 1.7 s on 2 CPU cores) and the import of torch._dynamo that PyTorch's first optimiser makes
        (about 2.7 s more, before the first epoch). The first start of the same config waits for it and takes
        its prepared network and data instead of preparing them again. Failures are ignored here; the real
        start reports them."""
        def work() -> None:
            with self._building:
                try:
                    run = Run(cfg, self.root)
                    run.prepare()
                    run.optimizer_for(run.net.model)
                except Exception:
                    return
                self._warm = run
        thread = threading.Thread(target=work, name="osp-warm-up", daemon=True)
        thread.start()
        return thread

    def start(self, cfg: Config) -> str:
        """Validate, load the data, then train in a daemon thread; returns the run id (ConfigError on bad input)."""
        run = Run(cfg, self.root)
        with self._building:                          # a warm-up still building: wait for it, then take it
            warm, self._warm = self._warm, None
            if warm is not None and warm.cfg == run.cfg:
                run.take_prepared(warm)
        return self._launch(run)

    def resume(self, run_id: str) -> str:
        """Continue a stale, cancelled or failed run after its last checkpointed epoch (ConfigError if it cannot)."""
        return self._launch(Run.resume(resolve_run_dir(self.root, run_id)))

    def resumable(self, run_id: str) -> bool:
        """Whether Resume applies: the run ended without finishing (or its writer is gone) and has a checkpoint."""
        reader = self.reader(run_id)
        info = reader.info()
        if info["holder"] is not None:               # another process (or thread) writes it
            return False
        ended = info["status"] in ("cancelled", "failed") or info["stale"]
        unexported = info["status"] == "finished" and not (reader.dir / "model.pt").is_file()
        return (ended or unexported) and (reader.dir / "checkpoint.pt").is_file() and \
            info["config"].get("dataset") != "custom"

    def branch(self, run_id: str, epoch: int, changes: dict | None = None) -> str:
        """Queue a branch of `run_id` pruned at `epoch` (osp_engine/running/branch.py), with `changes` to its
        fine-tuning (distillation); ConfigError if it cannot."""
        return self._launch(Run.branch(resolve_run_dir(self.root, run_id), epoch, self.root, changes))

    def sweep(self, run_id: str, epochs: list[int], changes: dict | None = None) -> list[str]:
        """Queue one branch per prune epoch (each with `changes`); they train one after another on the run's device."""
        return [self.branch(run_id, e, changes) for e in epochs]

    def sweep_targets(self, cfg: Config, targets: list[float], baseline: bool = True) -> list[str]:
        """Queue `cfg` at each FLOPs target, plus a dense baseline of the same schedule, under one sweep label."""
        configs = target_sweep_configs(cfg, targets, new_sweep_label(cfg), baseline)
        return [self.start(c) for c in configs]

    def _launch(self, run: Run) -> str:
        try:
            with self._building:
                run.prepare()
        except BaseException:
            run.release()                             # a resumed run's lock: nobody will write it here
            raise
        with self._lock:
            slot = self._slots.setdefault(str(run.device), threading.Semaphore(self.per_device))
            device_waits = any(str(r.device) == str(run.device) for r in self._queue)
            now = not device_waits and slot.acquire(blocking=False)      # never ahead of the queue
            if not now:
                self._queue.append(run)
            thread = threading.Thread(target=self._drive, args=(run, slot, now), name=f"osp-run-{run.run_id}",
                                      daemon=True)
            self._runs[run.run_id] = (run, thread)
        thread.start()
        if now:
            run.store_ready.wait(timeout=60)          # the run is listed from the moment start returns
        return run.run_id

    def _drive(self, run: Run, slot: threading.Semaphore, holding: bool) -> None:
        """Wait for the device's slot (unless cancelled in the queue), train, hand the slot on."""
        while not holding:
            if run.commands.cancelled:
                with self._lock:
                    self._queue.remove(run)
                run.release()
                return
            with self._lock:                          # first come, first served on each device
                first = next(r for r in self._queue if str(r.device) == str(run.device)) is run
            if not first:
                time.sleep(0.2)
                continue
            holding = slot.acquire(timeout=0.2)
            if holding:
                with self._lock:
                    self._queue.remove(run)
        try:
            run.execute()
        except BaseException as e:                    # before its store could say why: kept for the studio
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            with self._lock:
                self._failures.append(Failure(run.run_id, run.origin.what, reason, time.time()))
        finally:
            slot.release()
            with self._lock:                          # ended: its network, optimiser and data go with it
                if self._runs.get(run.run_id, (None,))[0] is run:
                    del self._runs[run.run_id]

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Wait until this manager's run `run_id` has ended, queued or training (True; also for a run it
        does not hold), or `timeout` seconds have passed (False)."""
        with self._lock:
            entry = self._runs.get(run_id)
        if entry is None:
            return True
        entry[1].join(timeout)
        return not entry[1].is_alive()

    def failures(self) -> list[Failure]:
        """The runs that failed in their thread before recording why, oldest first, until dismissed."""
        with self._lock:
            return list(self._failures)

    def dismiss(self, failure: Failure) -> None:
        with self._lock:
            if failure in self._failures:
                self._failures.remove(failure)

    def queued(self) -> list[tuple[str, str, int]]:
        """[(run id, device, runs ahead of it on that device)] of the runs waiting for a slot, in order."""
        with self._lock:
            waiting = list(self._queue)
        ahead: dict[str, int] = {}
        out = []
        for run in waiting:
            device = str(run.device)
            out.append((run.run_id, device, ahead.get(device, 0)))
            ahead[device] = ahead.get(device, 0) + 1
        return out

    def owned(self, run_id: str) -> Run | None:
        """This process's run if it is training now (not queued, not ended)."""
        with self._lock:
            entry = self._runs.get(run_id)
            waiting = entry is not None and entry[0] in self._queue
        return entry[0] if entry and entry[1].is_alive() and not waiting else None

    def cancel_queued(self, run_id: str) -> None:
        """Take a run out of the queue before it starts (nothing was written for it)."""
        with self._lock:
            entry = self._runs.get(run_id)
        if entry is not None:
            entry[0].commands.cancel("cancelled in the queue")
            entry[1].join(timeout=5)

    def command(self, run_id: str, name: str, *args) -> None:
        """cancel | pause | resume | prune_now | set_threshold | set_auto_prune; RuntimeError if not live."""
        run = self.owned(run_id)
        if run is not None:
            getattr(run.commands, name)(*args)
            return
        reader = self.reader(run_id)
        if reader.controls() is None:
            raise RuntimeError(f"run {run_id} is not running (finished, stopped, or made before runs could be "
                               f"steered from another process)")
        reader.send_command(name, *args)

    def controls(self, run_id: str) -> dict | None:
        """The live controls of a running run, this process's or another's; None if it is not live."""
        run = self.owned(run_id)
        if run is not None:
            return run.commands.snapshot()
        try:
            return self.reader(run_id).controls()
        except (FileNotFoundError, ValueError):
            return None

    def runs(self) -> tuple[list[RunReader], list[tuple[str, str]]]:
        """(readable runs newest first, [(folder name, why it is unreadable)]) in one pass over the folder."""
        return split_runs(self.root)

    def list(self) -> list[RunReader]:
        """The readable runs, newest first (a damaged one never takes a page down: see runs())."""
        return self.runs()[0]

    def reader(self, run_id: str) -> RunReader:
        return RunReader(resolve_run_dir(self.root, run_id))

    def delete(self, run_id: str) -> None:
        """Remove a run's folder; a live run of this studio is cancelled and awaited first. A run another
        process writes is refused (RunHeld): cancel it there first."""
        path = resolve_run_dir(self.root, run_id)
        with self._lock:
            entry = self._runs.pop(run_id, None)
        if entry is not None and entry[1].is_alive():
            entry[0].commands.cancel()
            entry[1].join(timeout=30)
        held = holder(path)
        if held is not None:
            raise RunHeld(describe(held, run_id) + ": cancel it before deleting it")
        if path.exists():
            shutil.rmtree(path)

    def shutdown(self) -> None:
        """Cancel every live run and wait for its thread (the app's on_release)."""
        with self._lock:
            entries = list(self._runs.values())
        for run, thread in entries:
            if thread.is_alive():
                run.commands.cancel("the studio stopped")
        for _, thread in entries:
            thread.join(timeout=30)


__all__ = ["Failure", "RunManager", "TERMINAL"]
