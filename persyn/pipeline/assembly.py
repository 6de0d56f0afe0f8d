"""One student's dataset from its routed answers (and the fallback's): the records, the oracle's scores,
the facts the dataset metrics keep, the card and the teacher shares. The assemble stage reads its
inputs, calls `assemble` once and writes what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from persyn.params.config import Params
from persyn.pipeline import budget, card, dataset, fallback, rewards
from persyn.pipeline.cache import RequestCache


@dataclass(frozen=True)
class Inputs:
    """What the assemble stage read: the routes and answers per teacher, the prompts, the fallback's
    answers, the S scores per teacher, each prompt's fallback order and the route stage's budget plan."""

    routes: dict[str, list[str]]
    generated: dict[str, list[dict[str, Any]]]
    prompts: list[dict[str, Any]]
    extra: list[dict[str, Any]]
    scores: dict[str, list[dict[str, Any]]]
    order: dict[str, list[str]]
    planned: dict[str, Any] | None


@dataclass(frozen=True)
class Assembled:
    records: list[dict[str, Any]]
    oracle_scores: dict[str, list[dict[str, Any]]]  # teacher → the oracle's score of every answer (else empty)
    summary: dict[str, Any]
    card: str
    shares: list[dict[str, Any]]


def assemble(params: Params, student: str, given: Inputs, cache: RequestCache, generated_file: str,
             prompts_file: str) -> Assembled:
    """Under route.strategy = "oracle" every answer is scored here and the best by r kept; the fallback's
    verified answers replace failed ones; the facts include the fallback's and the budget's outcome.
    `generated_file` (with {teacher}) and `prompts_file` name the sources in errors."""
    teachers = sorted(given.routes)
    by_id = {p["id"]: p for p in given.prompts}
    oracle = params.route.strategy == "oracle"
    scored = {t: (rewards.score_answers(params, t, given.generated[t], by_id, cache, generated_file.format(teacher=t),
                                        prompts_file) if oracle else []) for t in teachers}
    scores = [r for t in teachers for r in (scored[t] if oracle else given.scores[t])]
    records = dataset.assemble(given.prompts, given.routes, given.generated, scores, params.router,
                               params.assemble.drop_truncated, given.extra, params.assemble.unverified,
                               attempts=params.route.fallback > 0, source=generated_file)
    summary = dataset.metrics(records, given.routes, given.prompts, given.generated)
    if params.route.fallback:
        primary = {} if oracle else fallback.primary_answers(given.order, given.generated, generated_file)
        summary["fallback"] = fallback.metrics(primary, given.extra, by_id, records, params.route.fallback, not oracle,
                                               teachers)
    if given.planned:  # a budget in seconds reads the answers' times from the cache
        summary["budget"] = budget.outcome(given.planned, [a for t in teachers for a in given.generated[t]], given.extra,
                                           by_id, records, cache)
    text = card.build(params, dataset.release_name(params.assemble.name, student), summary, card.teacher_models(records))
    shares = [{"teacher": t, "share": v["share"]} for t, v in summary["teachers"].items()]
    return Assembled(records, scored, summary, text, shares)
