"""One writer per run: an OS lock on `<run>/writer.lock`, held by the process writing the run.

Every writer (a new run, a resume, a branch, the studio's thread, `attach`) takes the lock before it
writes and holds it until the run has recorded how it ended. The lock is `flock(LOCK_EX)` on an open
file: the operating system releases it when the holder's file is closed or its process dies, kill -9
included, so a dead writer never blocks a resume. flock belongs to the open file, not the process:
two threads of one studio that open the file separately exclude each other too.

A forked child (a DataLoader worker) would share that open file, and with it the lock: a run killed
with -9 would stay held until its workers died. So the child closes its copy as it starts (the parent's
copy keeps the lock); a spawned or exec'd child never gets one (the descriptor is close-on-exec).

The file holds who took it (pid, host, since, what) for the refusal a second writer gets. Readers ask
`holder(run_dir)`, which probes with a shared lock for an instant; a writer that meets such a probe
retries for a second before it gives up, so a probe never turns a free run into a refusal.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import weakref
from pathlib import Path

from ..method.config import ConfigError
from .faults import DiskFull

LOCK_NAME = "writer.lock"
RETRY_S = 1.0          # how long a writer retries a lock held by someone else (a reader's probe lasts microseconds)


class RunHeld(ConfigError):
    """Another process is writing this run: the message names it (pid, host, since when)."""


def describe(holder: dict | None, run_name: str) -> str:
    """'<run> is being written by pid P on HOST (what) since HH:MM:SS'."""
    if not holder:
        return f"{run_name} is being written by another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"{run_name} is being written by pid {holder.get('pid')} on {holder.get('host')}{what} since {since}"


class WriterLock:
    """The held lock of one run folder; `release()` (or the process's end) frees it."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir, self._fd = run_dir, fd
        os.register_at_fork(after_in_child=_forget_in_child(weakref.ref(self)))

    @classmethod
    def take(cls, run_dir: str | Path, what: str) -> "WriterLock":
        """Take `run_dir`'s lock, or raise RunHeld naming the holder. `what`: run, resume, branch, attach."""
        run_dir = Path(run_dir)
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _read(fd)
                    os.close(fd)
                    raise RunHeld(describe(holder, run_dir.name) + ": wait for it to end, or cancel it first") from None
                time.sleep(0.02)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what})
        try:
            os.pwrite(fd, me.encode(), 0)         # then cut what a longer old record left: never empty
            os.ftruncate(fd, len(me.encode()))
        except OSError as e:                      # the lock is not kept half-taken: closing frees it
            os.close(fd)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(run_dir / LOCK_NAME, len(me.encode())) from None
            raise
        return cls(run_dir, fd)

    def release(self) -> None:
        """Free the lock (idempotent). The file stays: removing it would race with the next taker."""
        if self._fd is not None:
            os.close(self._fd)            # closing the last descriptor of the open file releases flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def _forget_in_child(lock: weakref.ref):
    """The after-fork hook of one lock: the child closes its copy of the descriptor, never unlocks it
    (flock(LOCK_UN) would free the parent's lock too), and forgets it."""
    def forget() -> None:
        held = lock()
        if held is not None and held._fd is not None:
            os.close(held._fd)
            held._fd = None
    return forget


def _read(fd: int) -> dict | None:
    """The holder recorded in the lock file (None if the new holder has not written it within 0.5 s)."""
    for _ in range(50):
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode())
            if isinstance(record, dict):
                return record
        except ValueError:                # empty (just created) or caught mid-write: read again
            pass
        time.sleep(0.01)
    return None


def holder(run_dir: str | Path) -> dict | None:
    """Who writes `run_dir` now ({pid, host, since, what}), or None when nobody holds its lock (or the
    run was written before runs had locks)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
