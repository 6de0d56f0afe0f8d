"""Evaluate the trained and the untrained student on the held-out eval split, and on the shifted eval
set (split eval_shifted: phrasings the built-in generator never writes) where there is one.

Generations go through the request cache, keyed by the model's content hash: the untrained
student's answers are computed once and reused by every experiment, and a trained checkpoint
that did not change is never evaluated twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persyn.core import stats
from persyn.pipeline import rewards
from persyn.pipeline.cache import RequestCache
from persyn.params.config import Params
from persyn.engines import Sampling
from persyn.core.models import resolve
from persyn.pipeline.runner import EngineSpec
from persyn.pipeline.synthesis import generate_cached, generation_payloads

log = logging.getLogger("persyn.evaluate")

SPLITS = ("eval", "eval_shifted")  # what the student is evaluated on; the eval metrics keep eval's at the top


def answers(spec: str, params: Params, prompts: list[dict[str, Any]], cache: RequestCache) -> list[dict[str, Any]]:
    """Greedy answers of a student model (`spec`: the trained checkpoint or the untrained student) on
    the student's engine, with no system prompt: exactly how it was trained. As {id, response, request}."""
    student = params.student
    model = resolve(spec, student.chat_template)
    engine = EngineSpec(student.engine, student.device, params.eval.batch_size, options=student.engine_options)
    greedy = Sampling(temperature=0.0, max_tokens=params.eval.max_tokens)
    payloads = generation_payloads(model, engine, greedy, 0, [{"messages": p["messages"]} for p in prompts])
    answered = generate_cached(cache, model, engine, payloads, greedy, f"evaluate {model.identity}")
    return [{"id": p["id"], "response": completion.text, "request": key}
            for p, completion, key in zip(prompts, answered.values, answered.keys)]


def score(params: Params, prompts: list[dict[str, Any]], records: list[dict[str, Any]], cache: RequestCache,
          source: str) -> tuple[list[float], list[list[str]]]:
    """Math and task verifiers: the verified quality (0..1) of each answer to `prompts` (read from
    `source`: answers.verified). Instruction data: the reward-model score.
    Returns the per-prompt scores and each score's request-cache keys (none for math), which the
    predictions keep so that `persyn cache gc` keeps them too."""
    if params.quality.verifiable:
        correct = rewards.verified_quality([r["response"] for r in records], prompts, source)
        return correct, [[] for _ in correct]
    pairs = [(p["messages"], r["response"]) for p, r in zip(prompts, records)]
    scored = rewards.reward_model_quality(params.quality, pairs, cache)
    return list(scored.values), [[key] for key in scored.keys]


def accuracy_key(kind: str) -> str:
    """The metric's name under quality.kind: accuracy for verified answers, mean_reward for a reward model."""
    return "mean_reward" if kind == "reward_model" else "accuracy"


def summarise(kind: str, values: list[float]) -> dict[str, Any]:
    """Verified answers (math, a task verifier): accuracy, the mean verified score, with its Wilson 95%
    interval where every score is 0 or 1 (a bootstrap one where a verifier gave partial credit).
    Instruction data: mean reward with a 95% bootstrap interval over prompts. No prompts: no value, no interval."""
    key = accuracy_key(kind)
    if not values:
        return {key: None, "ci95": None, "prompts": 0}
    binary = key == "accuracy" and all(v in (0.0, 1.0) for v in values)
    found = stats.wilson(round(sum(values)), len(values)) if binary else stats.mean_ci(values)
    return {key: found.estimate, "ci95": {"low": found.low, "high": found.high}, "prompts": len(values)}


def metrics(kind: str, splits: list[str], trained: list[float], untrained: list[float]) -> dict[str, Any]:
    """The eval metrics without lm_eval: the eval split's trained and untrained students at the top,
    and the shifted set's under "eval_shifted" when the prompts have that split."""
    def students(split: str) -> dict[str, Any]:
        rows = [i for i, s in enumerate(splits) if s == split]
        return {"trained": summarise(kind, [trained[i] for i in rows]),
                "untrained": summarise(kind, [untrained[i] for i in rows])}

    found = students("eval")
    if "eval_shifted" in splits:
        found["eval_shifted"] = students("eval_shifted")
    return found


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


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes: the eval metrics, the per-prompt predictions, the accuracy plot."""

    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    plot: list[dict[str, Any]]


def run(params: Params, prompts: list[dict[str, Any]], checkpoint: Path, cache: RequestCache, source: str) -> Evaluation:
    """The trained checkpoint and the untrained student answer the eval prompts (read from `source`);
    both are scored alike, so the gain is paired prompt by prompt. The untrained student's answers come
    from the request cache after the first build."""
    trained = answers(f"local:{checkpoint}", params, prompts, cache)
    untrained = answers(params.student.model, params, prompts, cache)
    trained_scores, trained_keys = score(params, prompts, trained, cache, source)
    untrained_scores, untrained_keys = score(params, prompts, untrained, cache, source)
    found = metrics(params.quality.kind, [p["split"] for p in prompts], trained_scores, untrained_scores)
    harness = lm_eval(str(checkpoint), params.eval.lm_eval_tasks, params.eval.lm_eval_limit)
    if harness:
        found["lm_eval"] = harness
    predictions = [{"id": p["id"], "split": p["split"], "trained": t["response"], "untrained": u["response"],
                    "trained_score": ts, "untrained_score": us, "requests": [t["request"], u["request"], *tk, *uk]}
                   for p, t, u, ts, us, tk, uk in zip(prompts, trained, untrained, trained_scores, untrained_scores,
                                                      trained_keys, untrained_keys)]
    key = accuracy_key(params.quality.kind)
    plot = [{"student": which, key: found[which][key]} for which in ("untrained", "trained")]
    plot += [{"student": f"{which} (shifted)", key: found["eval_shifted"][which][key]}
             for which in ("untrained", "trained") if "eval_shifted" in found]
    return Evaluation(found, predictions, plot)
