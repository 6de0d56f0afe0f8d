"""Teacher generation: each teacher answers its prompts through the request runner.

A teacher's request is its chat (the teacher's system prompt, then the prompt's messages) or, for a
base model with a `prompt_template`, one completion text built from the prompt's user turns. What
determines the answer (model identity, answering engine, device, sampling, seed when sampling) is
the request-cache key, so an answer is generated once across stages and experiments: sample@T,
generate@T and the fallback all ask here.
"""

from __future__ import annotations

from typing import Any, Sequence

from persyn.cache import RequestCache
from persyn.config import SamplingConfig, TeacherConfig
from persyn.engines import Sampling
from persyn.models import ResolvedModel, resolve
from persyn.runner import CacheStats, EngineSpec, generate_cached, generation_payloads


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


def stats_record(teacher: str, written: int, carried: int) -> dict[str, Any]:
    """What a generation stage wrote, for its T.stats.json: facts about the data only, so the file
    (a build output) has the same bytes whatever the request cache held."""
    return {"teacher": teacher, "prompts": written, "from_subset": carried}
