"""Routing under a budget and per-teacher capacities: an exact assignment, and what it spends.

Each routed prompt goes to exactly one teacher. With a budget B on the pool's spend and caps on how
many prompts a teacher may take, the router maximises Σ π_t(x) (its Bradley–Terry coefficients:
a per-prompt shift cancels, since every prompt gets one teacher) subject to Σ cost ≤ B and
count_t ≤ cap_t. That is a small integer program (a multiple-choice knapsack with capacities);
HiGHS (scipy.optimize.milp) solves it to proven optimality. Router-subset prompts cost nothing:
every teacher answered them already.

A teacher's cost per answer is estimated from its answers on S: completion tokens are the engine's
counts (their mean on S), prompt tokens are estimated at 4 characters per token (the teachers'
tokenizers need not be loaded to plan), and USD is tokens times the engine's cost_per_million_*
prices (local engines have none, so cost nothing in USD). Seconds are the engine time each answer
took (its batch's time shared by completion tokens, kept with the answer in the request cache):
the plan charges a teacher's seconds per completion token on S times its mean completion tokens, the
outcome the pool answers' own measured seconds. A measured time differs from one cold build to the
next, so a route under a budget in seconds is the one routing that can: the records keep no times
and every other unit routes to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from persyn import engines
from persyn.core import layout
from persyn.pipeline.cache import CODECS, RequestCache
from persyn.params.config import Params, TeacherConfig
from persyn.core.errors import PersynError

CHARACTERS_PER_TOKEN = 4


def constrained(params: Params) -> bool:
    """Whether a budget or a teacher's cap is set (else the router's argmax routes, as before)."""
    return params.route.budget is not None or any(
        t.max_share is not None or t.max_prompts is not None for t in params.teachers.values())


def prices(teacher: TeacherConfig) -> tuple[float, float]:
    """USD per million prompt and completion tokens from the teacher's engine options (0 if unpriced)."""
    price_in, price_out = engines.parse_options(teacher.sampling.engine, teacher.sampling.engine_options).prices()
    return float(price_in), float(price_out)


def overhead_tokens(teacher: TeacherConfig) -> float:
    """Estimated prompt tokens the teacher adds to every request (system prompt or few-shot template)."""
    return len(teacher.system_prompt or teacher.prompt_template or "") / CHARACTERS_PER_TOKEN


def prompt_tokens(messages: Sequence[dict[str, str]]) -> float:
    return sum(len(m["content"]) for m in messages) / CHARACTERS_PER_TOKEN


def measured_seconds(answers: Sequence[dict[str, Any]], cache: RequestCache, source: str) -> list[dict[str, Any]]:
    """The answers (records naming their request keys) with the engine seconds the request cache keeps
    for each; one without a measured time stops the budget with the file and answer named."""
    found = cache.get_many({a["request"] for a in answers})
    timed = []
    for answer in answers:
        value = found.get(answer["request"])
        seconds = CODECS["generate"].decode(value).seconds if value is not None else None
        if seconds is None:
            why = "not there: computed in another cache" if value is None else "answered by a server or before times were kept"
            raise PersynError(
                f"{source}: answer {answer['id']} of {answer['teacher']} has no measured time in the request cache ({why}); "
                "route.budget.unit = 'seconds' needs the teachers' answers timed on this machine: use 'tokens' or 'usd', "
                "or clear those entries and build again")
        timed.append({**answer, "seconds": seconds})
    return timed


def cost_model(params: Params, samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per teacher: its prices, prompt overhead and mean completion tokens on S (what the plan charges),
    and its seconds per completion token where the answers carry their times (measured_seconds)."""
    model = {}
    for name in sorted(params.teachers):
        teacher = params.teachers[name]
        answers = samples.get(name) or []
        if not answers:
            raise PersynError(f"{layout.sample(name)}: no answers on the router subset to estimate {name}'s cost from")
        price_in, price_out = prices(teacher)
        model[name] = {"prompt_price": price_in, "completion_price": price_out,
                       "overhead_tokens": overhead_tokens(teacher),
                       "mean_completion_tokens": float(np.mean([a["completion_tokens"] for a in answers]))}
        if all("seconds" in a for a in answers):
            tokens = sum(max(a["completion_tokens"], 1) for a in answers)
            model[name]["seconds_per_token"] = float(sum(a["seconds"] for a in answers) / tokens)
    return model


def answer_cost(unit: str, model: dict[str, float], messages: Sequence[dict[str, str]], completion_tokens: float,
                seconds: float | None = None) -> float:
    """What one answer costs in `unit`, under a teacher's cost model (in seconds: its measured time
    where given, else the estimate)."""
    if unit == "tokens":
        return float(completion_tokens)
    if unit == "seconds":
        return float(seconds) if seconds is not None else max(completion_tokens, 1) * model["seconds_per_token"]
    tokens_in = prompt_tokens(messages) + model["overhead_tokens"]
    return (tokens_in * model["prompt_price"] + completion_tokens * model["completion_price"]) / 1e6


def cost_matrix(unit: str, model: dict[str, dict[str, float]], teachers: list[str],
                prompts: Sequence[dict[str, Any]]) -> np.ndarray:
    """Estimated cost of each (routed prompt, teacher); router-subset prompts cost 0 (already answered)."""
    return np.array([[0.0 if p["split"] == "router" else
                      answer_cost(unit, model[t], p["messages"], model[t]["mean_completion_tokens"]) for t in teachers]
                     for p in prompts]).reshape(len(prompts), len(teachers))


def capacities(params: Params, teachers: list[str], routed: int) -> np.ndarray:
    """Most prompts each teacher may take: the tighter of max_prompts and floor(max_share · routed)."""
    caps = []
    for name in teachers:
        teacher = params.teachers[name]
        cap = routed
        if teacher.max_share is not None:
            cap = min(cap, int(np.floor(teacher.max_share * routed + 1e-9)))
        if teacher.max_prompts is not None:
            cap = min(cap, teacher.max_prompts)
        caps.append(cap)
    if routed and sum(caps) < routed:
        raise PersynError(f"params.toml: teachers' max_share/max_prompts allow {sum(caps)} of the {routed} routed "
                          "prompts; raise a cap so that every prompt has a teacher")
    return np.array(caps, dtype=np.int64)


@dataclass(frozen=True)
class Solution:
    choice: np.ndarray  # teacher index per prompt
    gap: float  # proven relative optimality gap (0: optimal)


def solve(value: np.ndarray, cost: np.ndarray, capacity: np.ndarray, amount: float | None) -> Solution:
    """The assignment maximising Σ value within the budget and capacities (HiGHS branch and bound).
    An infeasible budget is one error naming the least it could be."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, kron, vstack

    prompts, teachers = value.shape
    if prompts == 0:
        return Solution(np.zeros(0, dtype=np.int64), 0.0)
    rows = [kron(np.eye(prompts), np.ones((1, teachers))), kron(np.ones((1, prompts)), np.eye(teachers))]
    lower, upper = [np.ones(prompts), np.zeros(teachers)], [np.ones(prompts), capacity.astype(float)]
    if amount is not None:
        rows.append(csr_matrix(cost.reshape(1, -1)))
        lower.append(np.zeros(1))
        upper.append(np.array([amount]))
    constraint = LinearConstraint(vstack(rows).tocsr(), np.concatenate(lower), np.concatenate(upper))
    result = milp(-value.reshape(-1), constraints=constraint, integrality=np.ones(value.size),
                  bounds=Bounds(0, 1), options={"mip_rel_gap": 0.0, "time_limit": 600.0})
    if result.x is None:
        least = solve(-cost, cost, capacity, None)  # the cheapest routing within the caps
        needed = float(cost[np.arange(prompts), least.choice].sum())
        raise PersynError(f"params.toml: route.budget.amount = {amount} cannot route every prompt; the cheapest "
                          f"routing within the teachers' caps costs {needed:.6g}")
    choice = result.x.reshape(prompts, teachers).argmax(axis=1)
    return Solution(choice, float(getattr(result, "mip_gap", 0.0) or 0.0))


def report(value: np.ndarray, cost: np.ndarray, choice: np.ndarray, teachers: list[str], capacity: np.ndarray,
           amount: float | None, unit: str, model: dict[str, dict[str, float]], gap: float) -> dict[str, Any]:
    """Predicted reward kept against the unconstrained route, planned spend, shares: for the route metrics."""
    rows = np.arange(len(value))
    free = value.argmax(axis=1)
    best, worst, kept = value.max(axis=1).sum(), value.min(axis=1).sum(), value[rows, choice].sum()
    spent = cost[rows, choice]
    return {
        "unit": unit,
        "amount": amount,
        "planned_spend": float(spent.sum()),
        "unconstrained_spend": float(cost[rows, free].sum()),
        "predicted_reward": {"routed": float(kept), "unconstrained": float(best),
                             "kept": float((kept - worst) / (best - worst)) if best > worst else 1.0},
        "optimality_gap": gap,
        "teachers": {t: {"cap": int(capacity[k]), "prompts": int((choice == k).sum()),
                         "share": float((choice == k).mean()) if len(choice) else 0.0,
                         "planned_spend": float(spent[choice == k].sum()), **model[t]}
                     for k, t in enumerate(teachers)},
    }


def spend(unit: str, model: dict[str, dict[str, float]], answers: Sequence[dict[str, Any]],
          prompts: dict[str, dict[str, Any]]) -> float:
    """What these answers actually cost, with their real completion tokens or measured seconds
    (router-subset answers are free)."""
    return float(sum(answer_cost(unit, model[a["teacher"]], prompts[a["id"]]["messages"], a["completion_tokens"],
                                 a.get("seconds")) for a in answers if prompts[a["id"]]["split"] != "router"))


def outcome(planned: dict[str, Any], routed: Sequence[dict[str, Any]], extra: Sequence[dict[str, Any]],
            prompts: dict[str, dict[str, Any]], records: Sequence[dict[str, Any]], cache: RequestCache) -> dict[str, Any]:
    """Planned against actual spend (the estimate's error), the predicted reward kept and the dataset's
    teacher shares, for the dataset metrics; fallback answers are spent outside the budget."""
    unit, model = planned["unit"], planned["teachers"]
    if unit == "seconds":
        pool = [a for a in routed if prompts[a["id"]]["split"] != "router"]
        routed = measured_seconds(pool, cache, f"{layout.GENERATED}/ (the routed pool answers)")
        extra = measured_seconds([a for a in extra if not a["from_subset"]], cache,
                                 f"{layout.FALLBACK}/ (the fallback's answers)")
    actual = spend(unit, model, routed, prompts)
    error = actual - planned["planned_spend"]
    return {
        "unit": unit, "amount": planned["amount"],
        "planned_spend": planned["planned_spend"], "actual_spend": actual, "estimate_error": error,
        "relative_error": error / planned["planned_spend"] if planned["planned_spend"] else 0.0,
        "fallback_spend": spend(unit, model, [a for a in extra if not a["from_subset"]], prompts),
        "within_budget": planned["amount"] is None or actual <= planned["amount"] + 1e-9,
        "predicted_reward_kept": planned["predicted_reward"]["kept"],
        "shares": {t: sum(r["teacher"] == t for r in records) / len(records) if records else 0.0 for t in sorted(model)},
    }
