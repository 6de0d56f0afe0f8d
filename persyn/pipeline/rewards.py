"""The two rewards of a (prompt, teacher response): quality and the student's learnability.

Quality is the verified final answer for math, a reward model's score for instruction data.
Learnability is the student's mean per-token log-likelihood of the response. Model scores go
through the request runner (persyn/pipeline/runner.py), so each is computed once across experiments.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any, Sequence

from persyn.sources.answers import verified
from persyn.pipeline.cache import RequestCache
from persyn.params.config import Params, QualityConfig, StudentConfig
from persyn.engines import ScoreRequest
from persyn.core.errors import PersynError
from persyn.core.models import resolve
from persyn.pipeline.runner import Answers, EngineSpec, all_at_once, engine_identity, lazy_engine, lazy_reward_model, run_cached

def verified_quality(responses: Sequence[str], prompts: Sequence[dict[str, Any]], source: str) -> list[float]:
    """Verified quality of each response to its prompt (read from `source`): answers.verified."""
    return [verified(response, prompt, source) for response, prompt in zip(responses, prompts)]


def reward_model_quality(
    config: QualityConfig, pairs: Sequence[tuple[list[dict[str, str]], str]], cache: RequestCache
) -> Answers:
    """Reward-model scores through the request cache; the model loads only if something is missing.
    The key names the rendering (chat.reward_ids): scores from the older text rendering, which could
    carry a second BOS, are computed again."""
    model = resolve(str(config.reward_model))
    engine = engine_identity(config.engine, config.engine_options)
    payloads: list[dict[str, Any]] = [
        {"kind": "reward", "model": model.identity, **engine, "device": config.device, "max_length": config.max_length,
         "rendering": "chat.reward_ids", "messages": messages, "response": response}
        for messages, response in pairs
    ]
    spec = EngineSpec(config.engine, config.device, config.batch_size, config.max_length, config.engine_options)
    with closing(lazy_reward_model(spec, model)) as scorer:
        return run_cached(cache, "reward", model.identity, payloads, list(pairs),
                          all_at_once(lambda batch: scorer.engine.score(batch)), config.batch_size, "reward model")


def learnability(
    student: StudentConfig, pairs: Sequence[tuple[list[dict[str, str]], str]], cache: RequestCache
) -> Answers:
    """The student's mean per-token log-likelihood of each (prompt messages, response); an engine that
    cannot score one was refused with the params (rules.students_score_loglikelihoods)."""
    model = resolve(student.model, student.chat_template)
    common = {"kind": "loglikelihood", "model": model.identity, **engine_identity(student.engine, student.engine_options),
              "device": student.device, "max_length": student.max_length}
    payloads = [{**common, "messages": messages, "response": response} for messages, response in pairs]
    requests = [ScoreRequest(messages, response) for messages, response in pairs]
    spec = EngineSpec(student.engine, student.device, student.batch_size, student.max_length, student.engine_options)
    with closing(lazy_engine(spec, model)) as lazy:
        return run_cached(cache, "loglikelihood", model.identity, payloads, requests,
                          all_at_once(lambda batch: lazy.engine.loglikelihood(batch)), student.batch_size, "learnability")


def score_answers(params: Params, teacher: str, answers: list[dict[str, Any]], prompts: dict[str, dict[str, Any]],
                  cache: RequestCache, source: str, prompts_source: str) -> list[dict[str, Any]]:
    """Raw quality and learnability of one teacher's answers (read from `source`), as score records;
    `prompts` were read from `prompts_source` (errors name both files)."""
    for answer in answers:
        if answer["id"] not in prompts:
            raise PersynError(f"{source}: record {answer['id']}: field 'id': not in {prompts_source} (stale file?)")
    pairs = [(prompts[a["id"]]["messages"], a["response"]) for a in answers]
    quality_keys: list[str | None] = [None] * len(answers)
    if params.quality.verifiable:
        quality = verified_quality([a["response"] for a in answers], [prompts[a["id"]] for a in answers], prompts_source)
    else:
        scored = reward_model_quality(params.quality, pairs, cache)
        quality, quality_keys = scored.values, list(scored.keys)
    likelihood = learnability(params.student, pairs, cache)
    return [{"id": a["id"], "teacher": teacher, "quality": q, "learnability": ll, "requests": [k for k in (qk, lk) if k]}
            for a, q, ll, qk, lk in zip(answers, quality, likelihood.values, quality_keys, likelihood.keys)]
