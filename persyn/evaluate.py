"""Evaluate the trained and the untrained student on the held-out eval split.

Generations go through the request cache, keyed by the model's content hash: the untrained
student's answers are computed once and reused by every experiment, and a trained checkpoint
that did not change is never evaluated twice.
"""

from __future__ import annotations

import logging
from typing import Any

from persyn import rewards
from persyn.cache import RequestCache
from persyn.config import Params
from persyn.engines import Sampling
from persyn.models import resolve
from persyn.runner import EngineSpec
from persyn.synthesis import generate_cached, generation_payloads

log = logging.getLogger("persyn.evaluate")


def answers(spec: str, params: Params, prompts: list[dict[str, Any]], cache: RequestCache) -> list[dict[str, Any]]:
    """Greedy answers of a student model (`spec`: the trained checkpoint or the untrained student) on
    the student's engine, with no system prompt: exactly how it was trained. As {id, response, request}."""
    student = params.student
    model = resolve(spec)
    engine = EngineSpec(student.engine, student.device, params.eval.batch_size, options=student.engine_options)
    greedy = Sampling(temperature=0.0, max_tokens=params.eval.max_tokens)
    payloads = generation_payloads(model, engine, greedy, 0, [{"messages": p["messages"]} for p in prompts])
    answered = generate_cached(cache, model, engine, payloads, greedy, f"evaluate {model.identity}")
    return [{"id": p["id"], "response": completion.text, "request": key}
            for p, completion, key in zip(prompts, answered.values, answered.keys)]


def score(params: Params, prompts: list[dict[str, Any]], records: list[dict[str, Any]], cache: RequestCache,
          source: str) -> tuple[dict[str, Any], list[float], list[list[str]]]:
    """Math: accuracy of the final answer against the references of `prompts` (read from `source`).
    Instruction data: mean reward-model score.
    Returns the summary, the per-prompt scores (correctness or reward) and each score's request-cache
    keys (none for math), which the predictions keep so that `persyn cache gc` keeps them too."""
    if params.quality.kind == "math":
        correct = rewards.math_quality([r["response"] for r in records], [p["reference"] for p in prompts],
                                       source, [p["id"] for p in prompts])
        summary = {"accuracy": sum(correct) / len(correct) if correct else None, "prompts": len(correct)}
        return summary, correct, [[] for _ in correct]
    pairs = [(p["messages"], r["response"]) for p, r in zip(prompts, records)]
    scored = rewards.reward_model_quality(params.quality, pairs, cache)
    values = scored.values
    summary = {"mean_reward": sum(values) / len(values) if values else None, "prompts": len(values)}
    return summary, values, [[key] for key in scored.keys]


def lm_eval(checkpoint: str, tasks: tuple[str, ...], limit: int) -> dict[str, Any]:
    """lm-evaluation-harness tasks on the checkpoint, where lm_eval is installed (skipped otherwise)."""
    if not tasks:
        return {}
    try:
        import lm_eval
    except ModuleNotFoundError:
        log.warning("eval.lm_eval_tasks is set but lm_eval is not installed: skipped (pip install lm-eval)")
        return {"skipped": "lm_eval is not installed"}
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={checkpoint}", tasks=list(tasks),
                                      limit=limit or None)
    return {task: {k: v for k, v in values.items() if isinstance(v, (int, float))}
            for task, values in results["results"].items()}
