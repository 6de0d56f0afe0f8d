"""A real `dvc repro` with one teacher behind an OpenAI-compatible endpoint (a loopback server that
drops and fails some requests): its token usage, retries and cost reach the run logs (runs/), and the
API key reaches no file the build writes."""

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from test_openai_engine import SECRET, FakeServer, serving

from persyn.testing.dvcproject import Project, make_project, params_toml

pytestmark = pytest.mark.slow  # a real dvc repro

PRICE_IN, PRICE_OUT = 2.0, 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


def api_params(models: dict[str, Path], url: str, concurrency: int = 4, batch_size: int = 4) -> str:
    base = params_toml(models)
    start = base.index("[teachers.base]")
    end = base.index("[students.student]")
    return base[:start] + f'''[teachers.api]
model = "api:echo-model"
engine = "openai"
system_prompt = "Answer briefly."
batch_size = {batch_size}

[teachers.api.engine_options]
base_url = "{url}"
api_key_env = "PERSYN_TEST_API_KEY"
max_concurrency = {concurrency}
backoff_s = 0.01
cost_per_million_prompt_tokens = {PRICE_IN}
cost_per_million_completion_tokens = {PRICE_OUT}

''' + base[end:]


def test_endpoint_teacher_through_a_real_build(server: FakeServer, tiny_models: dict[str, Path],
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    project: Project = make_project(tmp_path_factory.mktemp("api-project"), tmp_path_factory.mktemp("cache"),
                                    api_params(tiny_models, server.url))
    project.env.update({"PERSYN_TEST_API_KEY": SECRET, "no_proxy": "127.0.0.1"})
    server.script.extend(["503", "drop", "malformed"])
    output = project.run("dvc", "repro", "assemble")
    runs = [json.loads(project.file_bytes(f"runs/{stage}.json")) for stage in ("sample@api", "generate@student-api")]
    api = {key: sum(run["usage"][key] for run in runs) for key in runs[0]["usage"]}
    answered = [b for b in server.bodies if b["model"] == "echo-model"]
    # every answer of the router subset (10) and of the routed pool prompts, each paid once; 3 faults retried
    assert api["requests"] == len(answered) - 3 == 10 + runs[1]["generated"]
    assert api["retries"] == 3 and api["timeouts"] == 0
    prompt_tokens = sum(len(b["messages"][-1]["content"]) for b in answered[3:])  # the fake counts characters
    assert api["prompt_tokens"] == prompt_tokens
    assert api["cost_usd"] == pytest.approx((api["prompt_tokens"] * PRICE_IN + api["completion_tokens"] * PRICE_OUT) / 1e6)
    local = [json.loads(project.file_bytes(f"runs/{stage}.json"))["usage"]["cost_usd"]
             for stage in ("sample@a", "generate@student-a")]
    assert local == [0.0, 0.0]  # the local teacher costs nothing
    assert all(auth == f"Bearer {SECRET}" for auth in server.auth)
    cache = Path(project.env["PERSYN_CACHE_DIR"])
    written = [p for root in (project.path, cache) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert SECRET not in output.stdout + output.stderr


def paid_and_kept(database: Path) -> int:
    try:
        with sqlite3.connect(database, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM requests WHERE model LIKE 'api:%'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill_9_loses_at_most_the_requests_in_flight(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Each answer is committed as it completes: a real `kill -9` of `dvc repro` in the middle of a
    batch of 16 loses at most max_concurrency (2) paid answers, and the resumed build equals an
    uninterrupted one."""
    with serving() as server:
        server.delay = lambda body: 0.25
        params = api_params(tiny_models, server.url, concurrency=2, batch_size=16)
        project = make_project(tmp_path / "p", tmp_path / "cache", params)
        project.env.update({"PERSYN_TEST_API_KEY": SECRET, "no_proxy": "127.0.0.1"})
        build = subprocess.Popen(["dvc", "repro", "assemble"], cwd=project.path, env=project.env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while server.answered < 5 and build.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert build.poll() is None, "the build finished before it could be killed"
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
        time.sleep(0.5)  # let replies already on the wire arrive at the (dead) client
        paid, kept = server.answered, paid_and_kept(tmp_path / "cache/requests/requests.sqlite")
        assert paid - kept <= 2 and kept >= 3  # at most the requests in flight; the batch's finished answers were kept
        assert not (project.path / "data/sample/api.parquet").exists()
        project.repro("assemble")
        uninterrupted = make_project(tmp_path / "u", tmp_path / "u-cache", params)
        uninterrupted.env.update(project.env, PERSYN_CACHE_DIR=str(tmp_path / "u-cache"))
        uninterrupted.repro("assemble")
    assert project.lock_hashes() == uninterrupted.lock_hashes()
    assert project.file_bytes("metrics/student/dataset.json") == uninterrupted.file_bytes("metrics/student/dataset.json")
