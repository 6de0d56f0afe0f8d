"""A real `dvc repro` with one teacher behind an OpenAI-compatible endpoint (a loopback server that
drops and fails some requests): its token usage, retries and cost reach metrics/dataset.json, and the
API key reaches no file the build writes."""

import json
from pathlib import Path
from typing import Iterator

import pytest
from dvcproject import Project, make_project
from test_openai_engine import SECRET, FakeServer, serving
from test_pipeline import params_toml

pytestmark = pytest.mark.slow  # a real dvc repro

PRICE_IN, PRICE_OUT = 2.0, 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


def api_params(models: dict[str, Path], url: str) -> str:
    base = params_toml(models)
    start = base.index("[teachers.base]")
    end = base.index("[student]")
    return base[:start] + f'''[teachers.api]
model = "api:echo-model"
engine = "openai"
system_prompt = "Answer briefly."

[teachers.api.engine_options]
base_url = "{url}"
api_key_env = "PERSYN_TEST_API_KEY"
max_concurrency = 4
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
    metrics = json.loads(project.file_bytes("metrics/dataset.json"))
    api = metrics["teachers"]["api"]["usage"]
    answered = [b for b in server.bodies if b["model"] == "echo-model"]
    # every answer of the router subset (10) and of the routed pool prompts, each paid once; 3 faults retried
    assert api["requests"] == len(answered) - 3 == 10 + metrics["teachers"]["api"]["generated"]
    assert api["retries"] == 3
    prompt_tokens = sum(len(b["messages"][-1]["content"]) for b in answered[3:])  # the fake counts characters
    assert api["prompt_tokens"] == prompt_tokens
    assert api["cost_usd"] == pytest.approx((api["prompt_tokens"] * PRICE_IN + api["completion_tokens"] * PRICE_OUT) / 1e6)
    assert metrics["usage"]["cost_usd"] == pytest.approx(api["cost_usd"])  # the local teacher costs nothing
    assert all(auth == f"Bearer {SECRET}" for auth in server.auth)
    cache = Path(project.env["PERSYN_CACHE_DIR"])
    written = [p for root in (project.path, cache) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert SECRET not in output.stdout + output.stderr
