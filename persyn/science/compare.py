"""Routing strategies compared over independent draws: the data side of bench/strategies.py.

One larger set U (the profile's prompts less its eval split) is answered once by every teacher and
scored once (quality, and the student's learnability of each answer); the request cache keeps it, so
every arm's generations are free after that and the comparison costs its trainings and evaluations.
Each draw d takes its own router subset S_d and pool P_d from U (seeded by d), fits its own routers
(router.seed = d) and trains every arm's student with train.seed = d. The eval prompts (the profile's
eval split, and a transfer set of harder and left-out families) are the same for every draw, so any
two arms are compared paired by draw and by eval prompt (persyn.core.stats.compare_draws).

Every arm builds its dataset over S_d ∪ P_d with the product's own code (route.choose,
dataset.assemble), and spends generations as the product would: every teacher answers S_d, then the
pool as routed. Knows nothing of DVC.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from persyn.pipeline import dataset, prompts as prompt_source, rewards, route, router, synthesis
from persyn.sources import tasks
from persyn.pipeline.cache import RequestCache
from persyn.params.config import Params
from persyn.core.errors import PersynError

log = logging.getLogger("persyn.compare")

ARMS = {
    "persyn": "the router at the profile's α picks one teacher per prompt (Route then Generate)",
    "alpha-0": "the same router fitted on quality alone (α = 0)",
    "strongest": "the teacher with the best mean quality on S_d answers every prompt",
    "random": "a seeded uniform teacher per prompt",
    "family-oracle": "the teacher with the best mean quality on S_d in the prompt's family",
    "oracle": "every teacher answers; the answer with the best r is kept (Generate-then-Select)",
    "correct-only": "Generate-then-Select among verified answers; a prompt nobody got right is left out",
    "gold": "the verified reference, as the teachers' last line 'Answer: <reference>' (the positive control)",
}
ROUTER_ARMS = {"persyn": None, "alpha-0": 0.0}  # arm → the α its router is fitted with (None: the profile's)
GENERATE_ALL = {"oracle", "correct-only"}
GOLD = "gold"
SOURCE = "the comparison's prompts"  # how errors name the in-memory prompt set


@dataclass(frozen=True)
class Draw:
    """One independent draw: its own router subset and pool out of U, and its seed."""

    index: int
    router_ids: tuple[str, ...]
    pool_ids: tuple[str, ...]

    @property
    def seed(self) -> int:
        return self.index


def universe(params: Params) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(U, eval): the profile's prompts, those outside its eval split and those in it."""
    records = prompt_source.build(params.prompts, require_reference=params.quality.kind == "math")
    return ([p for p in records if p["split"] in ("router", "pool")],
            [p for p in records if p["split"] == "eval"])


def transfer(task_list: list[dict[str, Any]], count: int, seed: int, taken: set[str]) -> list[dict[str, Any]]:
    """Prompts no student trains on: harder settings of the families and families left out, as eval
    records with split 'transfer'. One that is also a training or eval prompt stops the comparison."""
    tasks.check_tasks(task_list)
    rows = []
    for row in tasks.generate(task_list, count, seed):
        key = prompt_source.prompt_id(row["prompt"])
        if key in taken:
            raise PersynError(f"transfer set: {row['label']}: also a training or eval prompt ({row['prompt']!r:.60})")
        rows.append({"id": key, "messages": [{"role": "user", "content": row["prompt"]}], "reference": row["reference"],
                     "split": "transfer", "family": row["family"], "verifier": row["verifier"]})
    return sorted({r["id"]: r for r in rows}.values(), key=lambda r: r["id"])


def make_draws(pool: list[dict[str, Any]], count: int, router_size: int, pool_size: int, seed: int) -> list[Draw]:
    """`count` draws of (S_d, P_d), disjoint within a draw, each from its own seeded sample of U."""
    ids = sorted(p["id"] for p in pool)
    if router_size + pool_size > len(ids):
        raise PersynError(f"{SOURCE}: |S| + |P| = {router_size + pool_size} but U holds {len(ids)} prompts; "
                          "raise prompts.count or draw smaller sets")
    draws = []
    for index in range(count):
        picked = random.Random(f"persyn-draw:{seed}:{index}").sample(ids, router_size + pool_size)
        draws.append(Draw(index, tuple(sorted(picked[:router_size])), tuple(sorted(picked[router_size:]))))
    return draws


def answer_all(params: Params, pool: list[dict[str, Any]], cache: RequestCache) -> dict[str, dict[str, dict[str, Any]]]:
    """Every teacher's answer to every prompt of U (teacher → prompt id → answer), once: the cache
    keeps them, so a resumed comparison reads them back."""
    answers = {}
    for name in sorted(params.teachers):
        log.info("teacher %s answers U (%d prompts)", name, len(pool))
        records, _ = synthesis.generate(params.teacher(name), pool, cache)
        answers[name] = {r["id"]: r for r in records}
    return answers


def score_all(params: Params, pool: list[dict[str, Any]], answers: dict[str, dict[str, dict[str, Any]]],
              cache: RequestCache) -> dict[tuple[str, str], dict[str, Any]]:
    """Quality and learnability of every answer in U, keyed (prompt id, teacher)."""
    by_id = {p["id"]: p for p in pool}
    scores = {}
    for name, rows in answers.items():
        log.info("scoring %s's answers to U for the student", name)
        for record in rewards.score_answers(params, name, list(rows.values()), by_id, cache, SOURCE, SOURCE):
            scores[(record["id"], name)] = record
    return scores


def draw_prompts(pool: list[dict[str, Any]], draw: Draw) -> list[dict[str, Any]]:
    """The draw's S_d (split router) and P_d (split pool), as the route and assemble code expects them."""
    split = {**{i: "router" for i in draw.router_ids}, **{i: "pool" for i in draw.pool_ids}}
    return [{**p, "split": split[p["id"]]} for p in pool if p["id"] in split]


def subset_scores(scores: dict[tuple[str, str], dict[str, Any]], draw: Draw) -> list[dict[str, Any]]:
    """The score records of S_d, every teacher's: what the draw's routers and baselines learn from."""
    subset = set(draw.router_ids)
    return [s for (i, _), s in sorted(scores.items()) if i in subset]


def fit_router(params: Params, draw: Draw, alpha: float | None, subset_scores: list[dict[str, Any]],
               inputs: dict[str, Any]) -> router.Trained:
    """The draw's router (seed = the draw), at the profile's α or the given one; `inputs` are texts
    under head lm, else embeddings."""
    config = dataclasses.replace(params.router, seed=draw.seed,
                                 **({} if alpha is None else {"alpha": alpha}))
    teachers = sorted(params.teachers)
    if config.head == "lm":
        from persyn.pipeline import lm_router  # torch and the backbone load only for this head
        return lm_router.fit(subset_scores, inputs, teachers, config).routing
    return router.fit(subset_scores, inputs, teachers, config).routing


def family_best(subset_scores: list[dict[str, Any]], family: dict[str, str], teachers: list[str]) -> dict[str, str]:
    """Per family, the teacher with the best mean quality on S_d (ties: teacher order)."""
    best = {}
    for name in sorted(set(family.values())):
        means = [np.mean([s["quality"] for s in subset_scores if s["teacher"] == t and family[s["id"]] == name] or [0.0])
                 for t in teachers]
        best[name] = teachers[int(np.argmax(means))]
    return best


def routes_for(arm: str, params: Params, draw: Draw, prompts: list[dict[str, Any]], subset_scores: list[dict[str, Any]],
               trained: dict[str, router.Trained], inputs: dict[str, Any]) -> dict[str, list[str]]:
    """Teacher → prompt ids of S_d ∪ P_d for one arm (every teacher for the Generate-then-Select arms)."""
    ids = sorted(p["id"] for p in prompts)
    teachers = sorted(params.teachers)
    if arm == GOLD:
        return {GOLD: ids}
    if arm == "family-oracle":
        family = {p["id"]: p.get("family") or "all" for p in prompts}
        best = family_best(subset_scores, family, teachers)
        return {t: [i for i in ids if best[family[i]] == t] for t in teachers}
    strategy = "oracle" if arm in GENERATE_ALL else ("persyn" if arm in ROUTER_ARMS else arm)
    config = dataclasses.replace(params.route, strategy=strategy, seed=draw.seed)
    fitted = trained.get(arm) or SimpleNamespace(teachers=teachers)  # a baseline reads only the teacher order
    vectors = router.stacked(inputs, ids, params.router)
    chosen = route.choose(config, ids, fitted, vectors, subset_scores)
    return {t: [i for i, picked in zip(ids, chosen) if k in picked] for k, t in enumerate(fitted.teachers)}


def gold_answers(prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference in the teachers' answer format, as if a teacher named gold had written it."""
    missing = [p["id"] for p in prompts if p["reference"] is None]
    if missing:
        raise PersynError(f"{SOURCE}: record {missing[0]}: field 'reference': the gold arm needs a reference")
    return [{"id": p["id"], "teacher": GOLD, "model": "reference", "response": f"Answer: {p['reference']}",
             "finish_reason": "stop", "completion_tokens": 0, "request": ""} for p in prompts]


def build(arm: str, params: Params, draw: Draw, pool: list[dict[str, Any]], answers: dict[str, dict[str, dict[str, Any]]],
          scores: dict[tuple[str, str], dict[str, Any]], trained: dict[str, router.Trained],
          inputs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One arm's training records for one draw, and the facts its row reports."""
    if arm not in ARMS:
        raise PersynError(f"unknown arm '{arm}' (known: {', '.join(ARMS)})")
    prompts = draw_prompts(pool, draw)
    routes = routes_for(arm, params, draw, prompts, subset_scores(scores, draw), trained, inputs)
    if arm == GOLD:
        generated = {GOLD: gold_answers(prompts)}
    else:
        generated = {t: [answers[t][i] for i in ids] for t, ids in routes.items()}
    records = dataset.assemble(prompts, routes, generated, list(scores.values()), params.router,
                               params.assemble.drop_truncated, unverified="drop" if arm == "correct-only" else "keep")
    return records, facts(arm, records, routes, draw, prompts, answers, len(params.teachers))


def facts(arm: str, records: list[dict[str, Any]], routes: dict[str, list[str]], draw: Draw,
          prompts: list[dict[str, Any]], answers: dict[str, dict[str, dict[str, Any]]], teachers: int) -> dict[str, Any]:
    """Records, fully verified records, answer tokens, teacher generations spent (every teacher on S_d,
    then the pool as routed; none for gold) and the teacher shares per family."""
    pool = set(draw.pool_ids)
    spent = 0 if arm == GOLD else teachers * len(draw.router_ids) + sum(len(pool & set(ids)) for ids in routes.values())
    family = {p["id"]: p.get("family") or "all" for p in prompts}
    shares: dict[str, dict[str, float]] = {}
    for name, count in sorted(Counter(family[r["id"]] for r in records).items()):
        mine = Counter(r["teacher"] for r in records if family[r["id"]] == name)
        shares[name] = {t: mine[t] / count for t in sorted(mine)}
    tokens = sum(answers[r["teacher"]][r["id"]]["completion_tokens"] for r in records if r["teacher"] != GOLD)
    return {"records": len(records), "verified_records": sum((r["quality"] or 0.0) >= 1.0 for r in records),
            "tokens": int(tokens), "generations": int(spent), "shares": shares}


def train_and_evaluate(params: Params, records: list[dict[str, Any]], draw: Draw, eval_prompts: list[dict[str, Any]],
                       cache: RequestCache, workdir: Path) -> tuple[list[float], dict[str, Any]]:
    """Train the student on one arm's records (train.seed = the draw), answer the eval prompts with it,
    and return the verified score per eval prompt with the training summary. The checkpoint is
    deleted afterwards: its answers stay in the request cache under its content identity."""
    from persyn.pipeline import evaluate, train  # torch and transformers load here, not at import

    out = workdir / f"student-{draw.index}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        summary, _ = train.train(records, params.student, dataclasses.replace(params.student.train, seed=draw.seed),
                                 out, SOURCE)
        answered = evaluate.answers(f"local:{out}", params, eval_prompts, cache)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return rewards.verified_quality([a["response"] for a in answered], eval_prompts, SOURCE), summary


def untrained_scores(params: Params, eval_prompts: list[dict[str, Any]], cache: RequestCache) -> list[float]:
    """The student before any training, on the same eval prompts: the floor every arm starts from."""
    from persyn.pipeline import evaluate

    answered = evaluate.answers(params.student.model, params, eval_prompts, cache)
    return rewards.verified_quality([a["response"] for a in answered], eval_prompts, SOURCE)
