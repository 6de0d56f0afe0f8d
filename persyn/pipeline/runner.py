"""The request runner: every engine call goes through the request cache, in batches sorted by length.

The engine is loaded only when some request is missing from the cache. Every answer is committed
as soon as it is back (an engine with `stream` hands them over one by one as they complete), so a
killed stage loses only what was in flight. Requests another process is computing at the same
time are claimed (persyn/core/claims.py): this one takes other work and waits for theirs instead of
repeating it. A cached value that cannot be read back as its kind's result (damaged, or from an
older format) counts as missing and is computed again. What a key holds of the engine is decided
here too (engine_identity), so that every kind of request names its engine alike.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

from tqdm import tqdm

from persyn import engines
from persyn.core import io
from persyn.pipeline.batching import even_batches
from persyn.pipeline.cache import CODECS, RequestCache, request_key
from persyn.core.claims import Worker, apply_threads, budget_threads
from persyn.engines import Engine, RewardScorer, Usage
from persyn.core.models import ResolvedModel

log = logging.getLogger("persyn.runner")

Request = TypeVar("Request")
Loaded = TypeVar("Loaded", Engine, RewardScorer)
Stream = Callable[[list[Any]], Iterable[list[tuple[int, Any]]]]  # groups of (position, answer), each committed at once
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


@dataclass(frozen=True)
class EngineSpec:
    """Which engine runs a model, where, and how: what a teacher, student or reward-model table names."""

    name: str
    device: str
    batch_size: int
    max_length: int = 2048
    options: dict[str, Any] = field(default_factory=dict)


class LazyEngine(Generic[Loaded]):
    """Loads the engine (or reward model) on first use, so a fully cached stage never loads a model;
    closing it releases the model."""

    def __init__(self, load: Callable[[], Loaded]) -> None:
        self._load = load
        self._loaded: Loaded | None = None

    @property
    def engine(self) -> Loaded:
        if self._loaded is None:
            self._loaded = self._load()
            apply_threads()  # the budget was set before torch was imported
        return self._loaded

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None


def lazy_engine(spec: EngineSpec, model: ResolvedModel) -> LazyEngine[Engine]:
    """The engine for generation and log-likelihoods; its options are checked now, before any lookup."""
    engines.parse_options(spec.name, spec.options)
    return LazyEngine(lambda: engines.load(spec.name, model, spec.device, spec.batch_size, spec.max_length,
                                           spec.options))


def lazy_reward_model(spec: EngineSpec, model: ResolvedModel) -> LazyEngine[RewardScorer]:
    """A reward model (a sequence classifier) run by the engine the spec names."""
    return LazyEngine(lambda: engines.load_reward(spec.name, model, spec.device, spec.max_length, spec.options))


def all_at_once(call: Callable[[list[Request]], list[Any]]) -> Stream:
    """A batch call (one answer per request, in order) as a stream of one group: the whole batch."""
    return lambda batch: [list(enumerate(call(batch)))]


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
    compute: Stream,
    batch_size: int,
    description: str,
) -> Answers:
    """Answer every request: cached ones from the cache, the rest in length-sorted batches of even size that this
    process claims (batches another process claimed are waited for) and `compute`s, committing each
    group of answers as `compute` yields it. Fresh and cached answers both
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
        _compute_claimed(cache, kind, model, keys, requests, pending, batch_size, description, found, compute, commit)
    stats.computed = len(mine)
    stats.reused = sum(key not in mine for key in keys)
    if len(mine) < len(pending):
        log.info("%s: %d answers were computed by another process at the same time", description,
                 len(pending) - len(mine))
    if stats.usage.timeouts:
        log.warning("%s: %d retries were caused by timeouts (see the engine's warnings above)", description,
                    stats.usage.timeouts)
    return Answers([found[key] for key in keys], keys, stats)


def _compute_claimed(cache: RequestCache, kind: str, model: str, keys: list[str], requests: Sequence[Any],
                     pending: list[int], batch_size: int, description: str, found: dict[str, Any], compute: Stream,
                     commit: Callable[[dict[str, Any], str], None]) -> None:
    """Compute the pending requests (positions) in batches this process claims first; a batch another
    process holds goes to the back of the queue, and its answers are read back once that process commits them."""
    with cache.guard():
        worker = Worker(cache.path)
    batches = deque(even_batches(pending, batch_size))
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
                    for group in compute([requests[i] for i in ours]):
                        commit({keys[ours[position]]: result for position, result in group}, worker.owner)
                    progress.update(len(ours))
                idle = 0 if ours or len(todo) < len(batch) else idle + 1
                if idle > len(batches):  # a whole round without progress: wait for the others' answers
                    time.sleep(POLL_S)
                    idle = 0
    finally:
        worker.close()


def engine_identity(engine: str, options: dict[str, Any]) -> dict[str, Any]:
    """What the cache key holds of the engine: the one that computes the answers (ray's inner
    engine) and its options that change answers (a dtype, say; never a concurrency or an address),
    the latter only when set, so the keys of a default build never move."""
    engine, options = engines.answering_engine(engine, options)
    changed = engines.parse_options(engine, options).answers_depend_on()
    return {"engine": engine, **({"engine_options": changed} if changed else {})}




def write_run_log(path: Path, stage: str, stats: CacheStats) -> None:
    """This run's counters (generated now, reused, tokens, cost, retries) as a run_log record at `path`:
    what the run did, not what the data is, so the caller keeps it out of the build's outputs."""
    io.write_json(path, {"stage": stage, "generated": stats.computed, "reused": stats.reused,
                         "usage": asdict(stats.usage), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, "run_log")
