"""Teacher generation and student scoring, batched by length and routed through the request cache.

The engine is loaded only when some request is missing from the cache. Every answer is committed
as soon as it is back (an engine with `stream` hands them over one by one as they complete), so a
killed stage loses only what was in flight. Requests another process is computing at the same
time are claimed (persyn/claims.py): this one takes other work and waits for theirs instead of
repeating it. A cached value that cannot be read back as its kind's result (damaged, or from an
older format) counts as missing and is computed again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from persyn import engines, io
from persyn.cache import CODECS, RequestCache, derived_seed, request_key
from persyn.claims import Worker, apply_threads, budget_threads
from persyn.config import StudentConfig, TeacherConfig
from persyn.engines import Engine, GenerationRequest, Sampling, ScoreRequest, Usage
from persyn.errors import PersynError
from persyn.models import ResolvedModel, resolve

log = logging.getLogger("persyn.synthesis")

Request = TypeVar("Request")
Stream = Callable[[list[Any]], Iterable[list[tuple[int, Any]]]]  # groups of (position, answer), each committed at once
RUN_LOG = Path("runs")
POLL_S = 0.25


@dataclass
class CacheStats:
    """How many answers this process computed and how many came from the request cache (or from
    another process computing them at the same time), and what the computed ones cost."""

    computed: int = 0
    reused: int = 0
    usage: Usage = field(default_factory=Usage)


@dataclass
class Answers:
    """Answers in request order, the request-cache key of each, and where they came from."""

    values: list[Any]
    keys: list[str]
    stats: CacheStats


class LazyEngine:
    """Loads the engine on first use, so a fully cached stage never loads a model."""

    def __init__(self, name: str, model: ResolvedModel, device: str, batch_size: int, max_length: int = 2048,
                 options: dict[str, Any] | None = None):
        self.name, self.model, self.device = name, model, device
        self.batch_size, self.max_length, self.options = batch_size, max_length, options or {}
        engines.parse_options(name, self.options)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engines.load(self.name, self.model, self.device, self.batch_size, self.max_length,
                                        self.options)
            apply_threads()  # the budget was set before torch was imported
        return self._engine

    def stream(self, sampling: Sampling) -> Stream:
        """Generation as groups of (position in batch, completion): one answer per group as each
        completes where the engine streams, else the whole batch as one group."""
        def run(batch: list[GenerationRequest]) -> Iterator[list[tuple[int, Any]]]:
            engine = self.engine
            if hasattr(engine, "stream"):
                yield from ([item] for item in engine.stream(batch, sampling))
            else:
                yield list(enumerate(engine.generate(batch, sampling)))
        return run

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _readable(kind: str, found: dict[str, Any], model: str, quiet: bool = False) -> dict[str, Any]:
    """The cached values decoded; one that cannot be read is dropped (recomputed) with a warning
    (`quiet`: the warning was given already)."""
    codec, readable = CODECS[kind], {}
    for key, value in found.items():
        try:
            readable[key] = codec.decode(value)
        except (TypeError, ValueError, KeyError) as error:
            if not quiet:
                log.warning("request cache: %s entry %s of %s cannot be read (%s); computing it again",
                            kind, key, model, error)
    return readable


def _usage(kind: str, results: Sequence[Any]) -> Usage:
    return Usage.of(results) if kind != "reward" else Usage(requests=len(results))


def run_cached(
    cache: RequestCache,
    kind: str,
    model: str,
    payloads: Sequence[dict[str, Any]],
    requests: Sequence[Request],
    call: Callable[[list[Request]], list[Any]],
    batch_size: int,
    description: str,
    stream: Stream | None = None,
) -> Answers:
    """Answer every request: cached ones from the cache, the rest in length-sorted batches that this
    process claims (batches another process claimed are waited for). Fresh and cached answers both
    come back through the kind's codec, so a resumed build reads the same values as an
    uninterrupted one."""
    codec = CODECS[kind]
    keys = [request_key(payload) for payload in payloads]
    found = _readable(kind, cache.get_many(set(keys)), model)
    first_missing: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in found:
            first_missing.setdefault(key, index)
    pending = sorted(first_missing.values(), key=lambda i: len(str(payloads[i])))
    log.info("%s: %d requests, %d from the cache, %d to compute", description, len(keys),
             sum(key in found for key in keys), len(pending))
    stats, mine = CacheStats(), set()

    def commit(results: dict[str, Any], owner: str) -> None:
        encoded = {key: codec.encode(result) for key, result in results.items()}
        cache.put_many(kind, model, encoded, owner)
        found.update((key, codec.decode(value)) for key, value in encoded.items())
        stats.usage.add(_usage(kind, list(results.values())))
        mine.update(results)

    if pending:
        with cache.guard():
            worker = Worker(cache.path)
        batches = deque(pending[start: start + batch_size] for start in range(0, len(pending), batch_size))
        idle = 0
        try:
            with tqdm(total=len(pending), desc=description, unit="req") as progress:
                while batches:
                    batch = [i for i in batches.popleft() if keys[i] not in found]
                    if not batch:
                        continue
                    with cache.guard():
                        claimed = worker.claim([keys[i] for i in batch])
                    # then what another process committed meanwhile (it drops its claims as it commits)
                    found.update(_readable(kind, cache.get_many([keys[i] for i in batch], quiet=True), model, quiet=True))
                    todo = [i for i in batch if keys[i] not in found]
                    progress.update(len(batch) - len(todo))
                    ours = [i for i in todo if keys[i] in claimed]
                    if len(ours) < len(todo):  # another process is computing these: come back to them
                        batches.append([i for i in todo if keys[i] not in claimed])
                    if ours:
                        budget_threads(worker.live_workers())
                        chunk = [requests[i] for i in ours]
                        if stream is not None:
                            for group in stream(chunk):
                                commit({keys[ours[position]]: result for position, result in group}, worker.owner)
                        else:
                            commit({keys[i]: result for i, result in zip(ours, call(chunk))}, worker.owner)
                        progress.update(len(ours))
                    idle = 0 if ours or len(todo) < len(batch) else idle + 1
                    if idle > len(batches):  # a whole round without progress: wait for the others' answers
                        time.sleep(POLL_S)
                        idle = 0
        finally:
            worker.close()
    stats.computed = len(mine)
    stats.reused = sum(key not in mine for key in keys)
    if len(mine) < len(pending):
        log.info("%s: %d answers were computed by another process at the same time", description,
                 len(pending) - len(mine))
    if stats.usage.timeouts:
        log.warning("%s: %d retries were caused by timeouts (see the engine's warnings above)", description,
                    stats.usage.timeouts)
    return Answers([found[key] for key in keys], keys, stats)


def stats_record(teacher: str, written: int, carried: int) -> dict[str, Any]:
    """What a generation stage wrote, for data/*/T.stats.json: facts about the data only, so the
    file (a DVC output) has the same bytes whatever the request cache held."""
    return {"teacher": teacher, "prompts": written, "from_subset": carried}


def write_run_log(stage: str, stats: CacheStats) -> Path:
    """This run's counters (generated now, reused, tokens, cost, retries) in runs/<stage>.json:
    git-ignored and not a DVC output, because they describe the run, not the data."""
    path = RUN_LOG / f"{stage}.json"
    io.write_json(path, {"stage": stage, "generated": stats.computed, "reused": stats.reused,
                         "usage": asdict(stats.usage), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, "run_log")
    return path


def engine_identity(engine: str, options: dict[str, Any]) -> dict[str, Any]:
    """What the cache key holds of the engine: the one that computes the answers (ray's inner
    engine) and its options that change answers (a dtype, say; never a concurrency or an address),
    the latter only when set, so the keys of a default build never move."""
    engine, options = engines.answering_engine(engine, options)
    changed = engines.parse_options(engine, options).answers_depend_on()
    return {"engine": engine, **({"engine_options": changed} if changed else {})}


def teacher_payloads(teacher: TeacherConfig, model: ResolvedModel,
                     conversations: Sequence[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Everything that determines a teacher's answer to each prompt (the request-cache payloads)."""
    sampling = teacher.sampling
    common: dict[str, Any] = {
        "kind": "generate",
        "model": model.identity,
        **engine_identity(sampling.engine, sampling.engine_options),
        "device": sampling.device,
        "sampling": asdict(Sampling(sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.stop)),
        **({"seed": sampling.seed} if sampling.temperature > 0 else {}),
    }
    system = [{"role": "system", "content": teacher.system_prompt}] if teacher.system_prompt else []
    payloads = []
    for messages in conversations:
        if teacher.prompt_template is not None:
            user = "\n".join(m["content"] for m in messages if m["role"] == "user")
            payloads.append({**common, "text": teacher.prompt_template.replace("{prompt}", user)})
        else:
            payloads.append({**common, "messages": system + messages})
    return payloads


def generate(
    teacher: TeacherConfig, prompts: Sequence[dict[str, Any]], cache: RequestCache
) -> tuple[list[dict[str, Any]], CacheStats]:
    """The teacher's response to each prompt record, as {id, teacher, model, response,
    finish_reason, completion_tokens, request}."""
    model = resolve(teacher.model, teacher.chat_template)
    sampling = teacher.sampling
    payloads = teacher_payloads(teacher, model, [p["messages"] for p in prompts])
    requests = [
        GenerationRequest(messages=pl.get("messages"), text=pl.get("text"), seed=derived_seed(pl)) for pl in payloads
    ]
    decoding = Sampling(sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.stop)
    lazy = LazyEngine(sampling.engine, model, sampling.device, sampling.batch_size, options=sampling.engine_options)
    try:
        answers = run_cached(
            cache, "generate", model.identity, payloads, requests,
            lambda batch: lazy.engine.generate(batch, decoding), sampling.batch_size, f"generate {teacher.name}",
            stream=lazy.stream(decoding),
        )
    finally:
        lazy.close()
    records = [
        {"id": p["id"], "teacher": teacher.name, "model": model.identity, "response": completion.text,
         "finish_reason": completion.finish_reason, "completion_tokens": completion.completion_tokens,
         "request": key}
        for p, completion, key in zip(prompts, answers.values, answers.keys)
    ]
    return records, answers.stats


def learnability(
    student: StudentConfig, pairs: Sequence[tuple[list[dict[str, str]], str]], cache: RequestCache
) -> Answers:
    """The student's mean per-token log-likelihood of each (prompt messages, response)."""
    if not engines.scores_loglikelihood(student.engine, student.engine_options):
        raise PersynError(
            f"params.toml: students.{student.name}.engine = '{student.engine}' cannot score log-likelihoods of a given response, "
            "which learnability needs; run the student on transformers, vllm or ray"
        )
    model = resolve(student.model, student.chat_template)
    common = {"kind": "loglikelihood", "model": model.identity, **engine_identity(student.engine, student.engine_options),
              "device": student.device, "max_length": student.max_length}
    payloads = [{**common, "messages": messages, "response": response} for messages, response in pairs]
    requests = [ScoreRequest(messages, response) for messages, response in pairs]
    lazy = LazyEngine(student.engine, model, student.device, student.batch_size, student.max_length,
                      student.engine_options)
    try:
        return run_cached(
            cache, "loglikelihood", model.identity, payloads, requests,
            lambda batch: lazy.engine.loglikelihood(batch), student.batch_size, "learnability",
        )
    finally:
        lazy.close()
