"""Teacher generation and student scoring, batched by length and routed through the request cache.

The engine is loaded only when some request is missing from the cache, and every finished batch
is committed before the next starts: a killed stage loses at most the batch in flight. A cached
value that cannot be read back as its kind's result (damaged, or from an older format) counts as
missing and is computed again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from tqdm import tqdm

from persyn import engines
from persyn.cache import CODECS, RequestCache, derived_seed, request_key
from persyn.config import StudentConfig, TeacherConfig
from persyn.engines import Engine, GenerationRequest, Sampling, ScoreRequest, Usage
from persyn.errors import PersynError
from persyn.models import ResolvedModel, resolve

log = logging.getLogger("persyn.synthesis")

Request = TypeVar("Request")


@dataclass
class CacheStats:
    """How many answers were computed now and how many came from the request cache, and what the
    computed ones cost."""

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
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _readable(kind: str, found: dict[str, Any], model: str) -> dict[str, Any]:
    """The cached values decoded; one that cannot be read is dropped (recomputed) with a warning."""
    codec, readable = CODECS[kind], {}
    for key, value in found.items():
        try:
            readable[key] = codec.decode(value)
        except (TypeError, ValueError, KeyError) as error:
            log.warning("request cache: %s entry %s of %s cannot be read (%s); computing it again",
                        kind, key[:16], model, error)
    return readable


def run_cached(
    cache: RequestCache,
    kind: str,
    model: str,
    payloads: Sequence[dict[str, Any]],
    requests: Sequence[Request],
    call: Callable[[list[Request]], list[Any]],
    batch_size: int,
    description: str,
) -> Answers:
    """Answer every request: cached ones from the cache, the rest in length-sorted batches. Fresh
    and cached answers both come back through the kind's codec, so a resumed build reads the
    same values as an uninterrupted one."""
    codec = CODECS[kind]
    keys = [request_key(payload) for payload in payloads]
    found = _readable(kind, cache.get_many(set(keys)), model)
    first_missing: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in found:
            first_missing.setdefault(key, index)
    pending = sorted(first_missing.values(), key=lambda i: len(str(payloads[i])))
    stats = CacheStats(computed=len(pending), reused=sum(key in found for key in keys))
    log.info("%s: %d requests, %d from the cache, %d to compute", description, len(keys), stats.reused, len(pending))
    with tqdm(total=len(pending), desc=description, unit="req", disable=not pending) as progress:
        for start in range(0, len(pending), batch_size):
            batch = pending[start: start + batch_size]
            results = call([requests[i] for i in batch])
            stats.usage.add(Usage.of(results) if kind != "reward" else Usage(requests=len(results)))
            computed = {keys[i]: codec.encode(result) for i, result in zip(batch, results)}
            cache.put_many(kind, model, computed)
            found.update((key, codec.decode(value)) for key, value in computed.items())
            progress.update(len(batch))
    return Answers([found[key] for key in keys], keys, stats)


def stats_record(teacher: str, written: int, carried: int, stats: CacheStats) -> dict[str, Any]:
    """What a generation stage did, for data/*/T.stats.json and metrics/dataset.json."""
    return {"teacher": teacher, "prompts": written, "from_subset": carried,
            "generated": stats.computed, "reused": stats.reused, "usage": asdict(stats.usage)}


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
    model = resolve(teacher.model)
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
            f"params.toml: student.engine = '{student.engine}' cannot score log-likelihoods of a given response, "
            "which learnability needs; run the student on transformers, vllm or ray"
        )
    model = resolve(student.model)
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
