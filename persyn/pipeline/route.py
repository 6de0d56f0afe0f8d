"""Route then Generate: which teacher answers which prompt, for PerSyn and every paper baseline.

  persyn           argmax of the router's coefficients per prompt (on its embedding, or under
                   router.head = "lm" its text)
  strongest        the single teacher with the best mean quality on the router subset (Strong)
  fixed:<teacher>  one named teacher for every prompt (e.g. Family-Strong)
  random           a seeded uniform choice per prompt
  mix              seeded: the strongest teacher with probability mix_ratio, else the weakest (Mix)
  car              one teacher by mean quality / (1 + beta * student loss) on the subset (CAR)
  oracle           every teacher answers every prompt; assemble keeps the best by r (Generate-then-Select)

Route files hold only ids (sorted), so a teacher whose set of prompts did not change keeps a
byte-identical file and DVC skips its generate stage. Beside them, each prompt's fallback order
(the routed teacher first, then the rest by the router's coefficients, or by mean quality on S for
the baselines) tells the fallback stage whom to ask next. Under route.budget or a teacher's
max_share/max_prompts, persyn's choice is the exact constrained optimum of persyn.pipeline.budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persyn.core import io, layout
from persyn.pipeline import budget
from persyn.pipeline.cache import RequestCache
from persyn.params.config import Params, RouteConfig
from persyn.core.errors import PersynError
from persyn.pipeline import router as router_head
from persyn.pipeline.router import Trained

ROUTED_SPLITS = ("router", "pool")


def subset_means(scores: list[dict[str, Any]], teachers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw quality and mean learnability per teacher over the router subset."""
    quality = np.array([np.mean([s["quality"] for s in scores if s["teacher"] == t]) for t in teachers])
    learn = np.array([np.mean([s["learnability"] for s in scores if s["teacher"] == t]) for t in teachers])
    return quality, learn


def choose(config: RouteConfig, ids: list[str], router: Trained, inputs: np.ndarray,
           scores: list[dict[str, Any]]) -> list[list[int]]:
    """For each prompt, the indices (into router.teachers) of the teachers that answer it; `inputs`
    are what the router reads, one row per prompt (an embedding, or under head lm the text)."""
    teachers = router.teachers
    quality, learn = subset_means(scores, teachers)
    strategy = config.strategy
    if strategy == "persyn":
        return [[int(i)] for i in router.route(inputs)] if ids else []
    if strategy == "oracle":
        return [list(range(len(teachers))) for _ in ids]
    if strategy == "random":
        return [[int(i)] for i in np.random.default_rng(config.seed).integers(0, len(teachers), len(ids))]
    if strategy == "mix":
        strong, weak = int(quality.argmax()), int(quality.argmin())
        draws = np.random.default_rng(config.seed).random(len(ids))
        return [[strong if draw < config.mix_ratio else weak] for draw in draws]
    if strategy == "strongest":
        single = int(quality.argmax())
    elif strategy == "car":
        single = int((quality / (1 + config.car_beta * -learn)).argmax())
    else:
        name = strategy.removeprefix("fixed:")
        if name not in teachers:
            raise PersynError(f"params.toml: route.strategy: unknown teacher '{name}' (configured: {', '.join(teachers)})")
        single = teachers.index(name)
    return [[single] for _ in ids]


@dataclass(frozen=True)
class Limits:
    """Estimated cost of each (routed prompt, teacher), each teacher's cap, and the budget."""

    cost: np.ndarray
    capacity: np.ndarray
    amount: float | None
    unit: str
    model: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Routing:
    assignment: dict[str, list[str]]  # teacher → sorted prompt ids
    order: dict[str, list[str]]  # prompt id → teachers to ask, the routed one first
    report: dict[str, Any]  # what the route stage writes to layout.metrics(S, "route")


def routed_prompts(prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((p for p in prompts if p["split"] in ROUTED_SPLITS), key=lambda p: p["id"])


def limits(params: Params, prompts: list[dict[str, Any]], samples: dict[str, list[dict[str, Any]]],
           teachers: list[str]) -> Limits | None:
    """The budget and caps for the routed prompts (in routed_prompts order); None when neither is set."""
    if not budget.constrained(params):
        return None
    unit = params.route.budget.unit if params.route.budget else "tokens"
    model = budget.cost_model(params, samples)
    routed = routed_prompts(prompts)
    return Limits(budget.cost_matrix(unit, model, teachers, routed), budget.capacities(params, teachers, len(routed)),
                  params.route.budget.amount if params.route.budget else None, unit, model)


def fallback_order(first: list[int], preference: np.ndarray) -> list[int]:
    """The routed teacher(s), then every other teacher by descending preference (ties: teacher order)."""
    rest = sorted((k for k in range(len(preference)) if k not in first), key=lambda k: (-preference[k], k))
    return first + rest


def route(config: RouteConfig, prompts: list[dict[str, Any]], trained: Trained,
          inputs: dict[str, np.ndarray] | dict[str, str], scores: list[dict[str, Any]],
          bounds: Limits | None = None) -> Routing:
    """Assign every router/pool prompt, with its fallback order and the report of what was planned;
    `inputs` maps prompt ids to what the router reads (embeddings, or under head lm the texts)."""
    routed = [p["id"] for p in routed_prompts(prompts)]
    missing = [i for i in routed if i not in inputs]
    if missing:
        raise PersynError(f"{layout.EMBEDDINGS}: no embedding for prompt {missing[0]} (re-run embed)")
    vectors = np.asarray([inputs[i] for i in routed])
    teachers = trained.teachers
    chosen = choose(config, routed, trained, vectors, scores)
    report: dict[str, Any] = {"strategy": config.strategy, "routed_prompts": len(routed), "budget": None}
    if config.strategy == "persyn":
        preference = trained.coefficients(vectors) if routed else np.zeros((0, len(teachers)))
    else:
        preference = np.tile(subset_means(scores, teachers)[0], (len(routed), 1))
    if bounds is not None:
        solution = budget.solve(preference, bounds.cost, bounds.capacity, bounds.amount)
        chosen = [[int(k)] for k in solution.choice]
        report["budget"] = budget.report(preference, bounds.cost, solution.choice, teachers, bounds.capacity,
                                         bounds.amount, bounds.unit, bounds.model, solution.gap)
    assignment: dict[str, list[str]] = {t: [] for t in teachers}
    order = {}
    for row, (prompt_id, picked) in enumerate(zip(routed, chosen)):
        for index in picked:
            assignment[teachers[index]].append(prompt_id)
        order[prompt_id] = [teachers[k] for k in fallback_order(picked, preference[row])]
    report["teachers"] = {t: {"prompts": len(ids), "share": len(ids) / len(routed) if routed else 0.0}
                          for t, ids in assignment.items()}
    return Routing(assignment, order, report)


def assign(config: RouteConfig, prompts: list[dict[str, Any]], trained: Trained,
           inputs: dict[str, np.ndarray] | dict[str, str], scores: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Teacher → sorted prompt ids, over the router and pool splits (no budget or caps)."""
    return route(config, prompts, trained, inputs, scores).assignment


def from_artifacts(params: Params, student: str, root: Path = Path(".")) -> Routing:
    """The routing the route stage writes for one student, from its router and scores, the prompts and
    S answers under `root` (`persyn plan` shows it before the pool is generated). A head lm router
    reads the prompt texts, on router.device (torch loads only for it)."""
    prompts = io.read_parquet(root / layout.PROMPTS, "prompt")
    if params.router.head == "lm":
        from persyn.pipeline import lm_router  # torch and the backbone's code load only for this head

        trained, _ = lm_router.load(root / layout.router(student), device=params.router.device)
        inputs: dict[str, np.ndarray] | dict[str, str] = {p["id"]: lm_router.prompt_text(p) for p in prompts}
    else:
        trained, _ = router_head.load(root / layout.router(student))
        inputs = io.read_embeddings(root / layout.EMBEDDINGS)
    scores = [r for t in trained.teachers
              for r in io.read_parquet(root / layout.scores(student, t), "score")]
    samples = {t: io.read_parquet(root / layout.sample(t), "generation") for t in trained.teachers}
    if params.route.budget is not None and params.route.budget.unit == "seconds":  # rules.seconds_budget_is_timed
        with RequestCache() as cache:
            samples = {t: budget.measured_seconds(s, cache, layout.sample(t)) for t, s in samples.items()}
    return route(params.route, prompts, trained, inputs, scores, limits(params, prompts, samples, trained.teachers))
