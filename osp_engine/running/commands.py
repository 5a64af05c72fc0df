"""The thread-safe command channel of a live run: cancel, pause/resume, prune now, threshold, auto-prune.

Any thread may call the setters; the run polls at batch boundaries (cancel, pause) and epoch
boundaries (prune now, threshold, auto-prune). Each accepted command is returned once by `drain()`
so the run can log it as an event.
"""
from __future__ import annotations

import threading
import time


class Cancelled(Exception):
    """Raised inside the run when a cancel command is seen."""


class Commands:
    def __init__(self, threshold: float) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._prune_now = False
        self._threshold = threshold
        self._auto_prune = True
        self._log: list[tuple[str, str]] = []
        self.reason = "cancelled by the user"

    def _note(self, kind: str, message: str) -> None:
        with self._lock:
            self._log.append((kind, message))

    def cancel(self, reason: str = "cancelled by the user") -> None:
        self.reason = reason
        self._cancel.set()
        self._running.set()
        self._note("cancel", reason)

    def pause(self) -> None:
        self._running.clear()
        self._note("pause", "paused")

    def resume(self) -> None:
        self._running.set()
        self._note("resume", "resumed")

    def prune_now(self) -> None:
        with self._lock:
            self._prune_now = True
        self._note("prune_now", "prune requested at the next epoch boundary")

    def set_threshold(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"threshold {value} is outside (0, 1]")
        with self._lock:
            self._threshold = float(value)
        self._note("threshold", f"threshold set to {value}")

    def set_auto_prune(self, on: bool) -> None:
        with self._lock:
            self._auto_prune = bool(on)
        self._note("auto_prune", f"auto-prune {'on' if on else 'off'}")

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def threshold(self) -> float:
        with self._lock:
            return self._threshold

    @property
    def auto_prune(self) -> bool:
        with self._lock:
            return self._auto_prune

    @property
    def prune_requested(self) -> bool:
        with self._lock:
            return self._prune_now

    def checkpoint(self, on_wait=None) -> None:
        """At a batch boundary: raise Cancelled, or block while paused (calling on_wait ~every second)."""
        self.wait_while_paused(on_wait)
        if self._cancel.is_set():
            raise Cancelled()

    def wait_while_paused(self, on_wait=None) -> None:
        """Block while paused (calling on_wait ~every second); returns on resume or cancel, never raises."""
        while not self._running.wait(timeout=1.0):
            if on_wait is not None:
                on_wait()

    def adopt(self, state: dict) -> None:
        """Take another rank's settings (snapshot()): threshold, auto-prune, a requested prune; not logged."""
        self.set_threshold(state["threshold"])
        self.set_auto_prune(state["auto_prune"])
        if state["prune_requested"]:
            self.prune_now()
        self.drain()

    def drain(self) -> list[tuple[str, str]]:
        with self._lock:
            out, self._log = self._log, []
        return out

    def snapshot(self) -> dict:
        """The settings a page shows: paused, threshold, auto_prune, prune_requested."""
        return dict(paused=self.paused, threshold=self.threshold, auto_prune=self.auto_prune,
                    prune_requested=self.prune_requested)


class Relay:
    """Carries commands between the run store and a run's Commands, for runs steered from another
    process (the studio steering a command-line or API run): applies queued commands and publishes
    the live controls, at most once per `every` seconds unless forced."""

    def __init__(self, store, commands: Commands, every: float = 1.0) -> None:
        self.store, self.commands, self.every = store, commands, every
        self.last, self.published = 0.0, None

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        for name, args in self.store.take_commands():
            try:
                getattr(self.commands, name)(*args)
            except (TypeError, ValueError):
                continue                                  # a malformed command from outside is ignored
        state = self.commands.snapshot()
        if state != self.published:
            self.store.write_controls(state)
            self.published = state
