"""The openai engine against a real loopback HTTP server that injects the faults it must survive."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections import deque
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from persyn import engines
from persyn.pipeline import rewards, synthesis
from persyn.pipeline.cache import RequestCache
from persyn.params.config import SamplingConfig, StudentConfig, TeacherConfig
from persyn.engines import GenerationRequest, Sampling, ScoreRequest, Usage
from persyn.engines.openai import OpenAIEngine, Options, RateLimiter, _retry_after
from persyn.core.errors import PersynError
from persyn.core.models import resolve

SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"


class FakeServer:
    """An OpenAI-compatible endpoint; `script` holds one behaviour per request to come (then "ok")."""

    def __init__(self) -> None:
        self.script: deque[str] = deque()
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.starts: list[float] = []
        self.delay: Callable[[dict[str, Any]], float] = lambda body: 0.0
        self.active = self.peak = 0
        self.answered = 0  # replies sent in full: answers the client has been paid for
        self.connections: set[tuple[str, int]] = set()  # client (host, port): one per kept-alive connection
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    behaviour = fake.script.popleft() if fake.script else "ok"
                    fake.bodies.append(body)
                    fake.paths.append(self.path)
                    fake.auth.append(self.headers.get("Authorization"))
                    fake.starts.append(time.monotonic())
                    fake.connections.add(self.client_address)
                    fake.active += 1
                    fake.peak = max(fake.peak, fake.active)
                try:
                    self.respond(behaviour, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow reply
                finally:
                    with fake.lock:
                        fake.active -= 1

            def send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def respond(self, behaviour: str, body: dict[str, Any]) -> None:
                time.sleep(fake.delay(body))
                if behaviour == "drop":
                    self.close_connection = True
                    return  # close the connection without a status line
                if behaviour == "slow":
                    time.sleep(0.6)
                if behaviour == "malformed":
                    return self.send(200, b'{"choices": [')
                if behaviour == "nochoices":
                    return self.send(200, b'{"object": "chat.completion"}')
                if behaviour == "429":
                    return self.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "2"})
                if behaviour == "429date":
                    return self.send(429, b"{}", {"Retry-After": formatdate(time.time() + 30, usegmt=True)})
                if behaviour in ("500", "502", "503"):
                    return self.send(int(behaviour), b"upstream trouble", {"Content-Type": "text/plain"})
                if behaviour == "500key":
                    return self.send(500, f"bad key {SECRET}".encode(), {"Content-Type": "text/plain"})
                if behaviour == "401":
                    message = f"Incorrect API key provided: {SECRET}"  # servers may echo the key
                    return self.send(401, json.dumps({"error": {"message": message}}).encode())
                self.send(200, json.dumps(reply(body, usage=behaviour != "nousage")).encode())
                with fake.lock:
                    fake.answered += 1

        return Handler


def reply(body: dict[str, Any], usage: bool = True) -> dict[str, Any]:
    """A deterministic answer derived from the request."""
    asked = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    text = f"echo: {asked} seed={body['seed']} temperature={body['temperature']}"
    choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
    choice["finish_reason"] = "length" if asked.startswith("cut") else "stop"
    answer: dict[str, Any] = {"choices": [choice]}
    if usage:
        answer["usage"] = {"prompt_tokens": len(asked), "completion_tokens": len(text)}
    return answer


def texts(completions: list[Any]) -> list[str]:
    return [c.text for c in completions]


@contextlib.contextmanager
def serving() -> Iterator[FakeServer]:
    """A FakeServer answering on a background thread for the duration of the block."""
    fake = FakeServer()
    threading.Thread(target=fake.http.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield fake
    finally:
        fake.http.shutdown()
        fake.http.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with serving() as fake:
        yield fake


class Sleeps(list):
    """Records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def engine(server: FakeServer, sleep: Any = None, spec: str = "api:echo-model", **options: Any) -> OpenAIEngine:
    parsed = Options(**{"base_url": server.url, "read_timeout_s": 0.3, "backoff_s": 0.01, **options})
    return OpenAIEngine(resolve(spec), 16, parsed, sleep=sleep, rng=random.Random(0))


def ask(text: str, seed: int = 0) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
                             seed=seed)


def test_answers_in_order_with_bounded_concurrency(server: FakeServer) -> None:
    server.delay = lambda body: 0.15 - 0.01 * body["seed"]  # later requests answer first
    sampling = Sampling(temperature=0.7, top_p=0.9, max_tokens=32, stop=("\nQuestion:",))
    loaded = engine(server, max_concurrency=4)
    completions = loaded.generate([ask(f"q{i}\nQuestion: tail", seed=i) for i in range(12)], sampling)
    loaded.close()
    assert [c.text for c in completions] == [f"echo: q{i}" for i in range(12)]
    assert 1 < server.peak <= 4
    assert set(server.paths) == {"/v1/chat/completions"}
    body = next(b for b in server.bodies if b["seed"] == 5)
    assert body == {"model": "echo-model", "messages": ask("q5\nQuestion: tail").messages, "temperature": 0.7,
                    "top_p": 0.9, "max_tokens": 32, "stop": ["\nQuestion:"], "seed": 5}
    assert server.auth == [None] * 12


def test_finish_reason_comes_from_the_reply(server: FakeServer) -> None:
    completions = engine(server).generate([ask("cut here"), ask("whole")], Sampling())
    assert [c.finish_reason for c in completions] == ["length", "stop"]


def test_completion_prompts_and_extra_body(server: FakeServer) -> None:
    loaded = engine(server, extra_body={"top_k": 20})
    assert texts(loaded.generate([GenerationRequest(text="Question: 1+1\nAnswer:", seed=3)], Sampling())) == [
        "echo: Question: 1+1\nAnswer: seed=3 temperature=0.0"]
    assert server.paths == ["/v1/completions"]
    assert server.bodies[0]["prompt"] == "Question: 1+1\nAnswer:" and server.bodies[0]["top_k"] == 20
    assert "messages" not in server.bodies[0] and "stop" not in server.bodies[0]


def test_every_fault_is_retried(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    faults = ["429", "500", "502", "503", "slow", "malformed", "nochoices", "drop"]
    server.script.extend(faults)
    sleeps = Sleeps()
    loaded = engine(server, sleep=sleeps, max_retries=len(faults))
    with caplog.at_level(logging.WARNING, "persyn.engines.openai"):
        completions = loaded.generate([ask("one", seed=1)], Sampling())
    assert texts(completions) == ["echo: one seed=1 temperature=0.0"]
    assert Usage.of(completions).retries == len(faults) and Usage.of(completions).requests == 1
    assert len(server.bodies) == len(faults) + 1
    assert sleeps[0] >= 2  # Retry-After: 2
    assert all(wait <= 0.01 * 2 ** attempt for attempt, wait in enumerate(sleeps[1:], start=1))
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == len(faults)
    assert "HTTP 429" in caplog.text and "no reply within 0.3 s (read_timeout_s" in caplog.text
    assert completions[0].timeouts == 1  # the "slow" reply: one read timeout among the retries


def test_faults_spread_over_concurrent_requests(server: FakeServer) -> None:
    server.script.extend(["429", "drop", "500", "malformed", "503"])
    loaded = engine(server, sleep=Sleeps(), max_concurrency=3, max_retries=5)
    completions = loaded.generate([ask(f"q{i}") for i in range(6)], Sampling())
    assert texts(completions) == [f"echo: q{i} seed=0 temperature=0.0" for i in range(6)]
    assert Usage.of(completions).retries == 5 and Usage.of(completions).requests == 6


def test_retry_after_is_capped_and_read_as_a_date(server: FakeServer) -> None:
    server.script.extend(["429date", "429"])
    sleeps = Sleeps()
    engine(server, sleep=sleeps, max_backoff_s=1.5).generate([ask("x")], Sampling())
    assert sleeps == [1.5, 1.5]
    assert _retry_after("3") == 3.0 and _retry_after("soon") is None and _retry_after(None) is None
    assert 25 < _retry_after(formatdate(time.time() + 30, usegmt=True)) <= 30


def test_unauthorised_fails_fast_without_the_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PERSYN_TEST_KEY", SECRET)
    server.script.extend(["500key", "401", "401", "401"])
    options = {"base_url": server.url, "api_key_env": "PERSYN_TEST_KEY", "max_concurrency": 1, "backoff_s": 0.01}
    with caplog.at_level(logging.DEBUG):
        loaded = engines.load("openai", resolve("api:echo-model"), options=options)
        with pytest.raises(PersynError, match="HTTP 401: Incorrect API key provided: \\*\\*\\*") as raised:
            loaded.generate([ask("a"), ask("b"), ask("c")], Sampling())
        loaded.close()
    assert SECRET not in str(raised.value) and SECRET not in caplog.text and "bad key ***" in caplog.text
    assert len(server.bodies) == 2  # one retry after the 500; the 401 is not retried; b and c never start
    assert server.auth == [f"Bearer {SECRET}"] * 2


def test_a_fatal_error_stops_requests_waiting_to_retry(server: FakeServer) -> None:
    server.script.extend(["500", "401"])
    loaded = engine(server, max_concurrency=2, backoff_s=30.0)  # real waits, cut short by the failure
    started = time.monotonic()
    with pytest.raises(PersynError, match="HTTP 401"):
        loaded.generate([ask("a"), ask("b"), ask("c")], Sampling())
    loaded.close()
    assert time.monotonic() - started < 20 and len(server.bodies) == 2  # not the 30 s backoff


def test_exhausted_retries_name_the_attempts(server: FakeServer) -> None:
    server.script.extend(["500"] * 3)
    loaded = engine(server, sleep=Sleeps(), max_retries=2)
    with pytest.raises(PersynError, match=r"/v1/chat/completions failed after 3 attempts; last error: HTTP 500"):
        loaded.generate([ask("x")], Sampling())
    assert len(server.bodies) == 3


def test_options_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSYN_TEST_MISSING", raising=False)
    with pytest.raises(PersynError, match="environment variable PERSYN_TEST_MISSING"):
        engines.load("openai", resolve("api:m"), options={"base_url": "http://x/v1", "api_key_env": "PERSYN_TEST_MISSING"})
    with pytest.raises(PersynError, match="engine 'openai' has no option 'api_key'"):
        engines.parse_options("openai", {"base_url": "http://x/v1", "api_key": SECRET})
    with pytest.raises(PersynError, match="base_url is required"):
        engines.parse_options("openai", {})
    with pytest.raises(PersynError, match="NAME of an environment variable") as raised:
        engines.parse_options("openai", {"base_url": "http://x/v1", "api_key_env": SECRET})
    assert SECRET not in str(raised.value)
    for bad, match in [({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
                       ({"read_timeout_s": 0}, "read_timeout_s must be a number > 0"),
                       ({"connect_timeout_s": -1}, "connect_timeout_s must be a number > 0"),
                       ({"extra_body": {"seed": 1}}, "extra_body may not set seed")]:
        with pytest.raises(PersynError, match=match):
            engines.parse_options("openai", {"base_url": "http://x/v1", **bad})
    assert engines.parse_options("openai", {"base_url": "http://x/v1", "read_timeout_s": 5}).answers_depend_on() == {}
    assert Options("http://x/v1", extra_body={"top_k": 20}).answers_depend_on() == {"extra_body": {"top_k": 20}}
    with pytest.raises(PersynError, match="set engine_options.served_model"):
        engines.load("openai", resolve(f"local:{tmp_path}"), options={"base_url": "http://x/v1"})
    served = engines.load("openai", resolve(f"local:{tmp_path}"), options={"base_url": "http://x/v1", "served_model": "s"})
    assert served.served_model == "s"
    assert engines.load("openai", resolve("hf:org/model@abc"), options={"base_url": "http://x/v1"}).served_model == "org/model"


def test_usage_and_cost(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    loaded = engine(server, cost_per_million_prompt_tokens=2.5, cost_per_million_completion_tokens=10.0)
    completions = loaded.generate([ask("ab"), ask("cdef")], Sampling())
    usage = Usage.of(completions)
    prompt, completion = len("ab") + len("cdef"), sum(len(c.text) for c in completions)
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
    assert usage.cost_usd == pytest.approx((prompt * 2.5 + completion * 10.0) / 1e6, rel=1e-12)
    server.script.extend(["nousage", "nousage"])
    with caplog.at_level(logging.DEBUG, "persyn.engines.openai"):
        unpriced = loaded.generate([ask("g"), ask("h")], Sampling())
    assert Usage.of(unpriced) == Usage(requests=2)
    assert caplog.text.count("returns no usage") == 1


def test_requests_per_minute_spaces_starts(server: FakeServer) -> None:
    clock = [100.0]
    limiter = RateLimiter(120, lambda: clock[0])
    assert [limiter.delay() for _ in range(3)] == [0.0, 0.5, 1.0]
    clock[0] = 110.0
    assert limiter.delay() == 0.0 and RateLimiter(0, time.monotonic).delay() == 0.0
    began = time.monotonic()
    engine(server, max_concurrency=4, requests_per_minute=1200).generate([ask(f"q{i}") for i in range(5)], Sampling())
    assert all(start >= began + 0.05 * i - 0.005 for i, start in enumerate(sorted(server.starts)))  # 0.05 s slots


def test_end_to_end_through_the_request_cache(server: FakeServer, tmp_path: Path) -> None:
    options = {"base_url": server.url, "max_concurrency": 2, "cost_per_million_completion_tokens": 1.0}
    teacher = TeacherConfig("remote", "api:echo-model",
                            SamplingConfig(engine="openai", temperature=0.5, batch_size=3, engine_options=options))
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"prompt {i}"}]} for i in range(5)]
    with RequestCache(tmp_path / "requests.sqlite") as cache:
        first, stats = synthesis.generate(teacher, prompts, cache)
        assert [r["response"].split(" seed=")[0] for r in first] == [f"echo: prompt {i}" for i in range(5)]
        assert (stats.computed, stats.reused, stats.usage.requests) == (5, 0, 5)
        assert stats.usage.prompt_tokens == sum(len(f"prompt {i}") for i in range(5))
        assert stats.usage.completion_tokens == sum(len(r["response"]) for r in first)
        assert stats.usage.cost_usd == pytest.approx(stats.usage.completion_tokens / 1e6)
        again, stats = synthesis.generate(teacher, prompts, cache)
    assert again == first and len(server.bodies) == 5
    assert (stats.computed, stats.reused, stats.usage.requests) == (0, 5, 0)


def test_the_student_cannot_be_scored_through_an_endpoint(server: FakeServer, tmp_path: Path) -> None:
    student = StudentConfig(model="api:echo-model", engine="openai", engine_options={"base_url": server.url})
    with RequestCache(tmp_path / "requests.sqlite") as cache, pytest.raises(PersynError, match="cannot score"):
        rewards.learnability(student, [([{"role": "user", "content": "q"}], "a")], cache)
    with pytest.raises(PersynError, match="run the student on transformers, vllm or ray"):
        engine(server).loglikelihood([ScoreRequest([{"role": "user", "content": "q"}], "a")])
    assert server.bodies == []


def test_connections_are_kept_alive_and_pooled(server: FakeServer) -> None:
    loaded = engine(server, max_concurrency=2)
    assert len(loaded.generate([ask(f"q{i}") for i in range(12)], Sampling())) == 12
    loaded.close()
    assert len(server.connections) <= 2  # one TLS handshake per pooled connection on HTTPS, not one per request


def test_stream_hands_over_each_answer_as_it_completes(server: FakeServer) -> None:
    """The slow request is held until the test has received both quick answers: a stream that waited
    for the whole batch would deadlock here and fail on the 10 s guard, whatever the machine's load."""
    release = threading.Event()
    server.delay = lambda body: float(not release.wait(10)) if body["messages"][-1]["content"] == "slow one" else 0.0
    loaded = engine(server, max_concurrency=3, read_timeout_s=30)
    arrivals = []
    for index, completion in loaded.stream([ask("slow one"), ask("quick a"), ask("quick b")], Sampling()):
        arrivals.append((index, completion.text.split(" seed")[0], release.is_set()))
        if len(arrivals) == 2:
            release.set()
    loaded.close()
    assert sorted(a[0] for a in arrivals[:2]) == [1, 2] and [a[2] for a in arrivals] == [False, False, True]
    assert arrivals[-1][:2] == (0, "echo: slow one")


def test_a_server_that_never_answers_is_told_from_a_queued_request(server: FakeServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import socket

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # never accepts: once its backlog is full, a connect times out
    port = full.getsockname()[1]
    backlog = [socket.socket() for _ in range(3)]
    for filler in backlog:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    time.sleep(0.1)
    dead = OpenAIEngine(resolve("api:m"), 4, Options(f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.3, max_retries=1,
                                                     backoff_s=0.01))
    with caplog.at_level(logging.WARNING, "persyn.engines.openai"), pytest.raises(PersynError, match="after 2 attempts"):
        dead.generate([ask("x")], Sampling())
    dead.close()
    assert "did not accept a connection within 0.3 s (connect_timeout_s" in caplog.text
    for sock in (full, *backlog):
        sock.close()
    caplog.clear()
    server.script.extend(["slow", "slow"])  # 0.6 s replies against a 0.3 s read timeout: queued, not dead
    with caplog.at_level(logging.WARNING, "persyn.engines.openai"):
        completion = engine(server, sleep=Sleeps()).generate([ask("y")], Sampling())[0]
    assert "connected, but no reply within 0.3 s (read_timeout_s" in caplog.text and "raise read_timeout_s" in caplog.text
    assert (completion.retries, completion.timeouts) == (2, 2)
    assert Usage.of([completion]).timeouts == 2


def test_timeouts_reach_the_stage_log(server: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = {"base_url": server.url, "max_concurrency": 1, "read_timeout_s": 0.3, "backoff_s": 0.01}
    teacher = TeacherConfig("remote", "api:echo-model", SamplingConfig(engine="openai", batch_size=2, engine_options=options))
    server.script.extend(["slow"])
    with RequestCache(tmp_path / "requests.sqlite") as cache, caplog.at_level(logging.WARNING):
        _, stats = synthesis.generate(teacher, [{"id": "p", "messages": [{"role": "user", "content": "q"}]}], cache)
    assert stats.usage.timeouts == 1 and "generate remote: 1 retries were caused by timeouts" in caplog.text
