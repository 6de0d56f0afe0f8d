"""Work sharing between processes that use one request cache at once (`dvc queue start -j 2`, two clones).

A process claims the requests it is about to compute (claim rows with an expiry in the cache's
SQLite file); another process skips them, takes unclaimed work, and waits for the rest to be
committed. A heartbeat thread renews the claims while their owner lives; the claims of a crashed
(`kill -9`) owner expire after one lease and are then taken over, so nobody is blocked for longer.
Each live worker is registered too, so that torch's thread budget is the machine's cores shared
by the processes computing at once, unless PERSYN_THREADS or OMP_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Sequence

from persyn.core.errors import PersynError

log = logging.getLogger("persyn.claims")

DEFAULT_LEASE_S = 30.0


def lease_seconds() -> float:
    """How long a claim outlives its owner's last heartbeat ($PERSYN_LEASE_S, default 30 s)."""
    raw = os.environ.get("PERSYN_LEASE_S", "")
    try:
        seconds = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        raise PersynError(f"PERSYN_LEASE_S must be a number of seconds, not {raw!r}") from None
    if seconds <= 0:
        raise PersynError(f"PERSYN_LEASE_S must be > 0, not {raw!r}")
    return seconds


class Worker:
    """This process's claims on one cache file, kept alive by a heartbeat until `close`."""

    def __init__(self, path: Path, lease_s: float | None = None) -> None:
        self.path, self.lease = path, lease_s or lease_seconds()
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._beat()
        self.thread = threading.Thread(target=self._heartbeat, name="persyn-claims", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        expires = time.time() + self.lease
        with self.lock, self.connection:
            self.connection.execute("UPDATE claims SET expires = ? WHERE owner = ?", (expires, self.owner))
            self.connection.execute("INSERT OR REPLACE INTO workers (owner, expires) VALUES (?, ?)", (self.owner, expires))

    def _heartbeat(self) -> None:
        while not self.stopped.wait(self.lease / 3):
            try:
                self._beat()
            except sqlite3.Error as error:  # the stage itself reports a broken cache; claims just expire
                log.debug("claims heartbeat: %s", error)

    def claim(self, keys: Sequence[str]) -> set[str]:
        """Claim the keys nobody else holds a live claim on; the ones now ours."""
        now = time.time()
        with self.lock:
            try:
                self.connection.execute("BEGIN IMMEDIATE")
                self.connection.execute("DELETE FROM claims WHERE expires < ?", (now,))
                self.connection.executemany("INSERT OR IGNORE INTO claims (key, owner, expires) VALUES (?, ?, ?)",
                                            [(key, self.owner, now + self.lease) for key in keys])
                mine = {key for (key,) in self.connection.execute(
                    f"SELECT key FROM claims WHERE owner = ? AND key IN ({','.join('?' * len(keys))})",
                    [self.owner, *keys])}
                self.connection.commit()
            except BaseException:
                self.connection.rollback()
                raise
        return mine

    def live_workers(self) -> int:
        """Processes (this one included) whose heartbeat is current."""
        with self.lock:
            (count,) = self.connection.execute("SELECT COUNT(*) FROM workers WHERE expires >= ?", (time.time(),)).fetchone()
        return max(1, count)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        try:
            with self.lock, self.connection:
                self.connection.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
                self.connection.execute("DELETE FROM workers WHERE owner = ? OR expires < ?", (self.owner, time.time()))
        except sqlite3.Error as error:
            log.debug("claims: could not release (%s); they expire in %.0f s", error, self.lease)
        self.connection.close()


_budget: int | None = None


def thread_budget(workers: int) -> int:
    """Threads for torch in this process: PERSYN_THREADS, else OMP_NUM_THREADS, else the cores shared
    among the processes computing at once."""
    for name in ("PERSYN_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "")
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise PersynError(f"{name} must be a whole number of threads >= 1, not {raw!r}")
            return int(raw)
    return max(1, (os.cpu_count() or 1) // workers)


def threads() -> int:
    """This process's thread budget, for engines with thread pools of their own (CTranslate2)."""
    return _budget if _budget is not None else thread_budget(1)


def budget_threads(workers: int) -> None:
    """Set (and remember, for an engine loaded later) this process's torch thread budget."""
    global _budget
    _budget = thread_budget(workers)
    apply_threads()


def apply_threads() -> None:
    """Apply the budget to torch, if this process has loaded torch at all (an endpoint teacher does not)."""
    torch = sys.modules.get("torch")
    if _budget is not None and torch is not None and torch.get_num_threads() != _budget:
        log.info("torch: %d threads (of %d cores)", _budget, os.cpu_count() or 1)
        torch.set_num_threads(_budget)
