"""Several real processes on one request cache: claimed work is not repeated, a killed owner's
claims expire after one lease, and torch's thread budget follows the processes computing at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from persyn.core import claims
from persyn.pipeline import runner
from persyn.pipeline.cache import RequestCache, request_key
from persyn.engines import Score
from persyn.core.errors import PersynError

WORKER = """
import json, sys, time
from persyn.pipeline import runner
from persyn.pipeline.cache import RequestCache
from persyn.engines import Score

def call(batch):
    time.sleep(0.05 * len(batch))  # the work another process must not repeat
    return [Score(-float(r), 1) for r in batch]

payloads = [{"kind": "loglikelihood", "n": n} for n in range(int(sys.argv[2]))]
with RequestCache(sys.argv[1]) as cache:
    answers = runner.run_cached(cache, "loglikelihood", "m@1", payloads, list(range(len(payloads))),
                                runner.all_at_once(call), 4, "w")
print(json.dumps({"computed": answers.stats.computed, "reused": answers.stats.reused, "values": answers.values}))
"""


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PERSYN_LEASE_S": "2"})


def test_two_processes_compute_each_request_once(tmp_path: Path) -> None:
    database = str(tmp_path / "c.sqlite")
    RequestCache(database).close()
    workers = [spawn(WORKER, database, "40") for _ in range(2)]
    results = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sum(r["computed"] for r in results) == 40  # each request once in total, not once per process
    assert all(r["computed"] > 0 for r in results)  # and both took work: nobody only waited
    assert results[0]["values"] == results[1]["values"] == [-float(n) for n in range(40)]
    with RequestCache(database) as cache:
        assert cache.connection.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)  # all released
        assert cache.verify() == []


def test_a_killed_owner_blocks_nobody_beyond_its_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "c.sqlite"
    RequestCache(database).close()
    payloads = [{"kind": "loglikelihood", "n": n} for n in range(6)]
    keys = json.dumps([request_key(p) for p in payloads])
    owner = spawn(f"from persyn.core.claims import Worker; import time, json; w = Worker({str(database)!r});"
                  f"print(len(w.claim(json.loads({keys!r}))), flush=True); time.sleep(600)")
    assert owner.stdout.readline().strip() == "6"  # it holds every request, then dies without releasing
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    monkeypatch.setenv("PERSYN_LEASE_S", "2")  # against the 30 s default: waiting that long would fail below
    began = time.monotonic()
    with RequestCache(database) as cache:
        answers = runner.run_cached(cache, "loglikelihood", "m", payloads, list(range(6)),
                                    runner.all_at_once(lambda batch: [Score(-1.0, 1) for _ in batch]), 4, "takeover")
    # one 2 s lease plus polling; generous for a loaded CI machine, and still well short of the default lease
    assert answers.stats.computed == 6 and time.monotonic() - began < 2 + 13


def test_thread_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSYN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [claims.thread_budget(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert claims.thread_budget(2) == 3
    monkeypatch.setenv("PERSYN_THREADS", "5")
    assert claims.thread_budget(2) == 5
    monkeypatch.setenv("PERSYN_THREADS", "many")
    with pytest.raises(PersynError, match="PERSYN_THREADS must be a whole number"):
        claims.thread_budget(1)
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("PERSYN_THREADS", "1")
    try:
        claims.budget_threads(2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
