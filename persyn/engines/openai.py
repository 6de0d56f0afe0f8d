"""The OpenAI-compatible engine: any /v1/chat/completions endpoint (vLLM, SGLang, llama.cpp, hosted APIs).

Requests run on a bounded thread pool over one httpx client (keep-alive connections pooled to
max_concurrency, so an HTTPS API pays one TLS handshake per connection, not per request); answers
are handed over as they complete (`stream`), so the cache commits each at once. Starts are spaced
by an optional per-teacher rate limit, and transient failures (429, 5xx, timeouts, dropped
connections, malformed replies) are retried with exponential backoff, full jitter and the server's
Retry-After. A connect timeout (the server never answered) is kept apart from a read timeout (the
request reached a server that is still busy, e.g. queued behind others): the latter is what a slow
server causes, and the log says which setting to raise. No torch needed. An endpoint returns
samples, not the log-likelihood of a given response, so this engine cannot score the student.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Sequence

import httpx

from persyn.engines import Backend, Completion, EngineOptions, GenerationRequest, Sampling, Score, ScoreRequest
from persyn.engines import truncate_at_stop
from persyn.core.errors import PersynError
from persyn.core.models import ResolvedModel

log = logging.getLogger("persyn.engines.openai")

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
RESERVED_BODY_KEYS = frozenset({"model", "messages", "prompt", "temperature", "top_p", "max_tokens", "stop", "seed",
                                "stream", "n"})
MAX_STOP = 4  # the OpenAI API refuses more; the rest are still cut locally


def _check(name: str, value: Any, minimum: float, integer: bool = False, above: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum or (above and value == minimum):
        bound = f"{'>' if above else '>='} {minimum}"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {bound}, not {value!r}")


@dataclass(frozen=True)
class Options(EngineOptions):
    """Where the endpoint is and how hard to push it; only extra_body can change answers."""

    base_url: str = ""
    api_key_env: str | None = None
    served_model: str | None = None
    max_concurrency: int = 8
    requests_per_minute: float = 0.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    cost_per_million_prompt_tokens: float = 0.0
    cost_per_million_completion_tokens: float = 0.0
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url is required and must start with http:// or https:// (e.g. http://localhost:8000/v1)")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(self.api_key_env)):
            # never echo the value: it may be the key itself, pasted by mistake
            raise ValueError("api_key_env must be the NAME of an environment variable holding the key, not the key")
        if self.served_model is not None and (not isinstance(self.served_model, str) or not self.served_model):
            raise ValueError("served_model must be a non-empty string")
        _check("max_concurrency", self.max_concurrency, 1, integer=True)
        _check("max_retries", self.max_retries, 0, integer=True)
        _check("connect_timeout_s", self.connect_timeout_s, 0, above=True)
        _check("read_timeout_s", self.read_timeout_s, 0, above=True)
        for name in ("requests_per_minute", "backoff_s", "max_backoff_s", "cost_per_million_prompt_tokens",
                     "cost_per_million_completion_tokens"):
            _check(name, getattr(self, name), 0)
        if not isinstance(self.extra_body, dict):
            raise ValueError("extra_body must be a table of request fields, e.g. { top_k = 20 }")
        if RESERVED_BODY_KEYS & set(self.extra_body):
            raise ValueError(f"extra_body may not set {', '.join(sorted(RESERVED_BODY_KEYS & set(self.extra_body)))}: "
                             "persyn sets these from the generation settings")

    def answers_depend_on(self) -> dict[str, Any]:
        return {"extra_body": self.extra_body} if self.extra_body else {}

    def prices(self) -> tuple[float, float]:
        return self.cost_per_million_prompt_tokens, self.cost_per_million_completion_tokens


class _Transient(Exception):
    """A failure worth retrying, with the wait the server asked for, if any."""

    def __init__(self, what: str, retry_after: float | None = None, timeout: bool = False) -> None:
        super().__init__(what)
        self.retry_after, self.timeout = retry_after, timeout


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


class RateLimiter:
    """Spaces request starts 60/requests_per_minute seconds apart across all threads of one engine."""

    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.clock, self.next_start, self.lock = clock, 0.0, threading.Lock()

    def delay(self) -> float:
        """Reserve the next start slot; the seconds to wait for it."""
        if not self.interval:
            return 0.0
        with self.lock:
            now = self.clock()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        return start - now


class OpenAIEngine:
    def __init__(self, model: ResolvedModel, batch_size: int, options: Options,
                 sleep: Callable[[float], Any] | None = None, rng: random.Random | None = None) -> None:
        self.model, self.batch_size, self.options = model, batch_size, options
        self.served_model = options.served_model or model.path
        self.base_url = options.base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        self._key = ""
        if options.api_key_env:
            self._key = os.environ.get(options.api_key_env, "")
            if not self._key:
                raise PersynError(f"engine 'openai': environment variable {options.api_key_env} (api_key_env) "
                                  "is not set or empty")
            self.headers["Authorization"] = f"Bearer {self._key}"
        self.sleep, self.rng = sleep, rng or random.Random()
        self.limiter = RateLimiter(options.requests_per_minute, time.monotonic)
        self.warned_no_usage = False
        self.executor: ThreadPoolExecutor | None = ThreadPoolExecutor(options.max_concurrency, "persyn-openai")
        self.client = httpx.Client(
            headers=self.headers, trust_env=True,
            timeout=httpx.Timeout(connect=options.connect_timeout_s, read=options.read_timeout_s,
                                  write=options.connect_timeout_s, pool=None),
            limits=httpx.Limits(max_connections=options.max_concurrency,
                                max_keepalive_connections=options.max_concurrency),
        )
        log.info("openai engine: %s at %s (at most %d concurrent requests)", self.served_model, self.base_url,
                 options.max_concurrency)

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        answers: list[Completion | None] = [None] * len(requests)
        for index, completion in self.stream(requests, sampling):
            answers[index] = completion
        return answers  # type: ignore[return-value]  # stream yields every index once

    def stream(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> Iterator[tuple[int, Completion]]:
        """(index, completion) as each request completes, at most max_concurrency in flight."""
        if self.executor is None:
            raise PersynError("openai engine: generate after close")
        abort = threading.Event()  # one fatal error stops the other requests of this call
        futures: dict[Future[Completion], int] = {
            self.executor.submit(self._answer, request, sampling, abort): index for index, request in enumerate(requests)}
        running = set(futures)
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                failed = [future for future in done if future.exception() is not None]
                for future in sorted(set(done) - set(failed), key=futures.__getitem__):
                    yield futures[future], future.result()  # paid answers first, even when another failed
                if failed:
                    failed[0].result()
        except BaseException:  # also an interrupt in this thread, or the consumer closing the stream
            abort.set()
            for future in running:
                future.cancel()
            raise

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        raise PersynError("engine 'openai': an OpenAI-compatible chat endpoint cannot score the log-likelihood of a "
                          "given response, which learnability needs; run the student on transformers, vllm or ray")

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
            self.client.close()

    def _pause(self, seconds: float, abort: threading.Event) -> None:
        if seconds > 0:
            (abort.wait if self.sleep is None else self.sleep)(seconds)

    def _answer(self, request: GenerationRequest, sampling: Sampling, abort: threading.Event) -> Completion:
        try:
            return self._attempts(request, sampling, abort)
        except BaseException:
            abort.set()  # before this worker picks up the next request
            raise

    def _attempts(self, request: GenerationRequest, sampling: Sampling, abort: threading.Event) -> Completion:
        body: dict[str, Any] = {"model": self.served_model, "temperature": sampling.temperature,
                                "top_p": sampling.top_p, "max_tokens": sampling.max_tokens, "seed": request.seed}
        if sampling.stop:
            body["stop"] = list(sampling.stop[:MAX_STOP])
        if request.messages is not None:
            url, body["messages"] = f"{self.base_url}/chat/completions", request.messages
        else:
            url, body["prompt"] = f"{self.base_url}/completions", request.text
        data = json.dumps({**body, **self.options.extra_body}).encode("utf-8")
        attempts, timeouts = self.options.max_retries + 1, 0
        for attempt in range(attempts):
            self._pause(self.limiter.delay(), abort)
            if abort.is_set():  # never used: the failure that set abort raises in stream
                return Completion("", "stop", 0, 0)
            try:
                reply = self._post(url, data)
                choice = reply["choices"][0]
                text = choice["message"]["content"] if request.messages is not None else choice["text"]
                if text is not None and not isinstance(text, str):
                    raise TypeError("content is not a string")
            except (KeyError, IndexError, TypeError) as error:
                failure = _Transient(f"malformed reply (no choices[0] text: {error!r})")
            except _Transient as error:
                failure = error
            else:
                return self._completion(reply, truncate_at_stop(text or "", sampling.stop), attempt, timeouts)
            timeouts += failure.timeout
            if attempt + 1 == attempts:
                break
            wait = self.rng.uniform(0, min(self.options.max_backoff_s, self.options.backoff_s * 2 ** min(attempt, 30)))
            if failure.retry_after is not None:
                wait = max(wait, min(failure.retry_after, self.options.max_backoff_s))
            log.warning("openai engine: POST %s: %s; retry %d/%d in %.1f s", url, failure, attempt + 1,
                        self.options.max_retries, wait)
            self._pause(wait, abort)
        raise PersynError(f"openai engine: POST {url} failed after {attempts} attempts; last error: {failure}")

    def _post(self, url: str, data: bytes) -> Any:
        """One attempt: the parsed JSON reply, _Transient for what may pass, PersynError for what will not."""
        try:
            response = self.client.post(url, content=data)
        except httpx.ConnectTimeout:
            raise _Transient(f"the server did not accept a connection within {self.options.connect_timeout_s} s "
                             "(connect_timeout_s: it is down, unreachable or refusing work)", timeout=True) from None
        except httpx.ReadTimeout:
            raise _Transient(f"connected, but no reply within {self.options.read_timeout_s} s (read_timeout_s: the "
                             "request is likely still queued or running at a slow server; resending adds to its "
                             "queue, so raise read_timeout_s for a slow server)", timeout=True) from None
        except httpx.TimeoutException as error:
            raise _Transient(f"timed out ({type(error).__name__})", timeout=True) from None
        except httpx.TransportError as error:  # refused, reset, dropped, bad HTTP
            raise _Transient(f"connection failed: {self._scrub(repr(error))}") from None
        if response.status_code >= 400:
            what = f"HTTP {response.status_code}: {self._server_message(response)}"
            if response.status_code in RETRY_STATUS:
                raise _Transient(what, _retry_after(response.headers.get("Retry-After")))
            raise PersynError(f"openai engine: POST {url}: {what}")
        try:
            return response.json()
        except ValueError:
            raise _Transient(f"malformed JSON reply: {self._scrub(response.text[:200])!r}") from None

    def _server_message(self, response: httpx.Response) -> str:
        """The server's own error message (OpenAI, vLLM or plain text), short and without the key."""
        raw = response.text
        try:
            reply = json.loads(raw)
            message = reply.get("error", reply)
            message = message.get("message", message) if isinstance(message, dict) else message
        except (ValueError, AttributeError):
            message = raw
        return self._scrub(str(message).strip())[:300]

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _completion(self, reply: dict[str, Any], text: str, retries: int, timeouts: int) -> Completion:
        """The answer with the server's finish_reason and token usage, priced by the options."""
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        if not usage and not self.warned_no_usage:
            self.warned_no_usage = True
            log.debug("openai engine: %s returns no usage; its tokens and cost count as 0", self.base_url)
        cost = (prompt * self.options.cost_per_million_prompt_tokens
                + completion * self.options.cost_per_million_completion_tokens) / 1e6
        finish = "length" if reply["choices"][0].get("finish_reason") == "length" else "stop"
        return Completion(text, finish, prompt, completion, retries, cost, timeouts)


class OpenAIBackend(Backend):
    Options = Options
    STREAMS = True  # answers arrive one by one from a server (stream): no engine time of ours to measure

    def check_model(self, spec: str, device: str, options: Options) -> None:
        if spec.startswith(("packaged:", "local:")) and options.served_model is None:
            raise PersynError(f"{spec}: the openai engine sends a model name to an endpoint; set "
                              "engine_options.served_model to the name the server serves these weights under")

    def load(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> OpenAIEngine:
        """device and max_length are the endpoint's business."""
        return OpenAIEngine(model, batch_size, options)


BACKEND = OpenAIBackend()
