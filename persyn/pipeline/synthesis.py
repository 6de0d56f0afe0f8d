"""Generation through the request runner, and the teachers' requests.

What determines a generated answer (model identity, answering engine, device, sampling, the seed
when sampling, the prompt) is its request-cache key, so an answer is generated once across stages
and experiments. A teacher's request is its chat (its system prompt, then the prompt's messages)
or, for a base model with a `prompt_template`, one completion text built from the prompt's user
turns; sample@T, generate@T and the fallback ask teachers here, and evaluation asks the student
through the same generate_cached.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict, replace
from typing import Any, Iterator, Sequence, cast

from persyn.pipeline.cache import RequestCache, derived_seed
from persyn.params.config import SamplingConfig, TeacherConfig
from persyn.engines import Completion, GenerationRequest, Sampling, StreamingEngine, backend
from persyn.core.models import ResolvedModel, resolve
from persyn.pipeline.runner import Answers, CacheStats, EngineSpec, engine_identity, lazy_engine, run_cached


def generation_payloads(model: ResolvedModel, spec: EngineSpec, decoding: Sampling, seed: int,
                        prompts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request-cache payload of generating an answer to each prompt (a chat {"messages"} or a raw
    completion {"text"}): everything that determines the answer. The seed counts only when sampling."""
    common: dict[str, Any] = {
        "kind": "generate",
        "model": model.identity,
        **engine_identity(spec.name, spec.options),
        "device": spec.device,
        "sampling": asdict(decoding),
        **({"seed": seed} if decoding.temperature > 0 else {}),
    }
    return [{**common, **prompt} for prompt in prompts]


def generate_cached(cache: RequestCache, model: ResolvedModel, spec: EngineSpec, payloads: Sequence[dict[str, Any]],
                    decoding: Sampling, description: str) -> Answers:
    """The completion for each generation payload, each request seeded from its own payload (so a
    sample does not depend on its batch); the engine loads only if some answer is missing, and
    streams answers to the cache as they complete where it can."""
    requests = [GenerationRequest(messages=p.get("messages"), text=p.get("text"), seed=derived_seed(p)) for p in payloads]
    streams = backend(spec.name).STREAMS  # concurrent requests to a server: no engine time of its own to measure

    def stream(batch: list[GenerationRequest]) -> Iterator[list[tuple[int, Completion]]]:
        engine = lazy.engine
        if streams:
            yield from ([item] for item in cast(StreamingEngine, engine).stream(batch, decoding))
        else:
            started = time.perf_counter()
            completions = engine.generate(batch, decoding)
            yield list(enumerate(timed(completions, time.perf_counter() - started)))

    with closing(lazy_engine(spec, model)) as lazy:
        return run_cached(cache, "generate", model.identity, payloads, requests, stream, spec.batch_size, description)


def timed(completions: list[Completion], seconds: float) -> list[Completion]:
    """A batch's engine time shared among its answers by completion tokens (the decoding steps each
    took part in), kept with each answer in the request cache: what a budget in seconds charges."""
    weights = [max(c.completion_tokens, 1) for c in completions]
    return [replace(c, seconds=seconds * w / sum(weights)) for c, w in zip(completions, weights)]


def engine_spec(sampling: SamplingConfig) -> EngineSpec:
    return EngineSpec(sampling.engine, sampling.device, sampling.batch_size, options=sampling.engine_options)


def decoding(sampling: SamplingConfig) -> Sampling:
    return Sampling(sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.stop)


def teacher_prompt(teacher: TeacherConfig, messages: list[dict[str, str]]) -> dict[str, Any]:
    """What the teacher is sent for one prompt: {"text": ...} under a prompt template, else {"messages": ...}."""
    if teacher.prompt_template is not None:
        user = "\n".join(m["content"] for m in messages if m["role"] == "user")
        return {"text": teacher.prompt_template.replace("{prompt}", user)}
    system = [{"role": "system", "content": teacher.system_prompt}] if teacher.system_prompt else []
    return {"messages": system + messages}


def teacher_payloads(teacher: TeacherConfig, model: ResolvedModel,
                     conversations: Sequence[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Everything that determines a teacher's answer to each prompt (the request-cache payloads)."""
    sampling = teacher.sampling
    return generation_payloads(model, engine_spec(sampling), decoding(sampling), sampling.seed,
                               [teacher_prompt(teacher, messages) for messages in conversations])


def generate(
    teacher: TeacherConfig, prompts: Sequence[dict[str, Any]], cache: RequestCache
) -> tuple[list[dict[str, Any]], CacheStats]:
    """The teacher's response to each prompt record, as {id, teacher, model, response,
    finish_reason, completion_tokens, request}."""
    model = resolve(teacher.model)
    payloads = teacher_payloads(teacher, model, [p["messages"] for p in prompts])
    answers = generate_cached(cache, model, engine_spec(teacher.sampling), payloads, decoding(teacher.sampling),
                              f"generate {teacher.name}")
    records = [
        {"id": p["id"], "teacher": teacher.name, "model": model.identity, "response": completion.text,
         "finish_reason": completion.finish_reason, "completion_tokens": completion.completion_tokens,
         "request": key}
        for p, completion, key in zip(prompts, answers.values, answers.keys)
    ]
    return records, answers.stats
