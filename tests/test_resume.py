"""A real `kill -9` in the middle of a real `dvc repro`: the next repro completes only what is missing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from persyn.core import io
from persyn.params import config
from persyn.pipeline import synthesis
from persyn.pipeline.cache import RequestCache
from persyn.testing.dvcproject import make_project, params_toml

pytestmark = pytest.mark.slow  # a real dvc repro


def committed_generations(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM requests WHERE kind = 'generate'").fetchone()[0]
    except sqlite3.OperationalError:  # the stage has created the file but not yet its table
        return 0


@pytest.mark.parametrize("engine, max_tokens", [("transformers", 160), ("ctranslate2", 400)])
def test_kill_during_generation_loses_at_most_one_batch(tiny_models: dict[str, Path], tmp_path: Path, engine: str,
                                                        max_tokens: int) -> None:
    params = params_toml(tiny_models).replace("router_size = 10", "router_size = 16").replace(
        "[generation]\nmax_tokens = 8\nbatch_size = 4",
        f"[generation]\nengine = \"{engine}\"\nmax_tokens = {max_tokens}\nbatch_size = 2")
    cache_dir = tmp_path / "cache"
    project = make_project(tmp_path / "project", cache_dir, params)
    database = cache_dir / "requests" / "requests.sqlite"

    process = subprocess.Popen(["dvc", "repro"], cwd=project.path, env=project.env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while committed_generations(database) < 4 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survived = committed_generations(database)
    assert 4 <= survived < 16 and survived % 2 == 0  # whole batches of 2 only
    assert not (project.path / "data/sample/a.parquet").exists()  # no half-written artifact

    ran = project.repro("sample@a")  # the interrupted stage and what it needs: the rest of the build is not at issue
    assert "sample@a" in ran
    stats = json.loads(project.file_bytes("runs/sample@a.json"))
    assert stats["reused"] == survived and stats["generated"] == 16 - survived

    teacher = config.load(project.path / "params.toml").teacher("a")
    subset = [p for p in io.read_parquet(project.path / "data/prompts.parquet", "prompt") if p["split"] == "router"]
    with RequestCache(tmp_path / "uninterrupted.sqlite") as fresh:
        uninterrupted, _ = synthesis.generate(teacher, subset, fresh)
    resumed = pl.read_parquet(project.path / "data/sample/a.parquet").to_dicts()
    assert resumed == uninterrupted  # greedy decoding: a resumed run equals an uninterrupted one
