"""Routing under a budget and per-teacher caps: the solver against exhaustive search, the caps, the
cost model, and the errors a bad budget gives."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from test_strategies import IDS, SCORES, TEACHERS, X, router_preferring

from persyn.params import config
from persyn.pipeline import budget, route
from persyn.params.config import RouteConfig
from persyn.core.errors import PersynError
from persyn.testing.dvcproject import params_toml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def exhaustive(value: np.ndarray, cost: np.ndarray, capacity: np.ndarray, amount: float | None) -> float | None:
    """The best total value over every assignment (None: none is feasible)."""
    best = None
    rows = np.arange(len(value))
    for choice in itertools.product(range(value.shape[1]), repeat=len(value)):
        picked = np.array(choice)
        if (np.bincount(picked, minlength=value.shape[1]) > capacity).any():
            continue
        if amount is not None and cost[rows, picked].sum() > amount + 1e-9:
            continue
        total = value[rows, picked].sum()
        best = total if best is None or total > best else best
    return best


@pytest.mark.parametrize("seed", range(12))
def test_solver_equals_exhaustive_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prompts, teachers = int(rng.integers(3, 8)), 3
    value = rng.normal(size=(prompts, teachers))
    cost = np.tile(rng.integers(1, 6, teachers).astype(float), (prompts, 1))
    cost[rng.random(prompts) < 0.3] = 0.0  # router-subset prompts: already answered
    capacity = rng.integers(1, prompts + 1, teachers)
    capacity[0] = max(capacity[0], prompts - capacity[1:].sum())  # feasible
    amount = float(rng.uniform(cost.min(axis=1).sum(), cost.max(axis=1).sum()))
    best = exhaustive(value, cost, capacity, amount)
    if best is None:
        with pytest.raises(PersynError, match="route.budget.amount"):
            budget.solve(value, cost, capacity, amount)
        return
    solution = budget.solve(value, cost, capacity, amount)
    rows = np.arange(prompts)
    assert value[rows, solution.choice].sum() == pytest.approx(best)
    assert cost[rows, solution.choice].sum() <= amount + 1e-9
    assert (np.bincount(solution.choice, minlength=teachers) <= capacity).all()


def test_an_impossible_budget_names_the_least_it_could_be() -> None:
    value = np.zeros((4, 2))
    cost = np.array([[3.0, 1.0]] * 4)
    with pytest.raises(PersynError, match=r"route.budget.amount = 3.5 cannot route every prompt; .* costs 4$"):
        budget.solve(value, cost, np.array([4, 4]), 3.5)
    with pytest.raises(PersynError, match="costs 6$"):  # at most 3 prompts on the cheap teacher
        budget.solve(value, cost, np.array([4, 3]), 5.0)


def params(**tables: dict) -> config.Params:
    raw = tomllib.loads(params_toml({name: Path(name) for name in ("encoder", "teacher_a", "base", "student")}))
    for name, table in tables.items():
        section, _, key = name.partition("__")
        (raw[section][key] if key else raw[section]).update(table)
    return config.parse(raw)


def test_caps_take_the_tighter_of_share_and_count() -> None:
    capped = params(teachers__a={"max_share": 0.5}, teachers__base={"max_prompts": 7})
    assert budget.capacities(capped, ["a", "base"], 14).tolist() == [7, 7]
    assert budget.capacities(params(teachers__a={"max_share": 0.5, "max_prompts": 3}), ["a", "base"], 10).tolist() == [3, 10]
    with pytest.raises(PersynError, match="allow 13 of the 15 routed prompts"):
        budget.capacities(params(teachers__a={"max_share": 0.4}, teachers__base={"max_prompts": 7}), ["a", "base"], 15)


def test_bad_combinations_stop_at_the_params() -> None:
    reward = {"kind": "reward_model", "reward_model": "local:models/reward"}
    with pytest.raises(PersynError, match="route.fallback needs a verifiable quality"):
        params(route={"fallback": 1}, quality=reward)
    with pytest.raises(PersynError, match="assemble.unverified = 'drop' needs quality.kind 'math' or 'verifier'"):
        params(assemble={"unverified": "drop"}, quality=reward)
    with pytest.raises(PersynError, match="route.budget applies to the router's choice"):
        params(route={"strategy": "strongest", "budget": {"amount": 5, "unit": "tokens"}})
    with pytest.raises(PersynError, match="teachers.a.max_share/max_prompts applies"):
        params(route={"strategy": "oracle"}, teachers__a={"max_share": 0.5})
    with pytest.raises(PersynError, match="route.budget.unit: 'minutes' is not one of"):
        params(route={"budget": {"amount": 5, "unit": "minutes"}})
    api = {"model": "api:big", "engine": "openai", "engine_options": {"base_url": "http://127.0.0.1:9/v1"}}
    with pytest.raises(PersynError, match="teacher a's engine \\(openai\\) is a server it cannot time"):
        params(teachers__a=api, route={"budget": {"amount": 5, "unit": "seconds"}})
    params(route={"budget": {"amount": 5, "unit": "seconds"}})  # local engines are timed
    with pytest.raises(PersynError, match="teachers' max_share values sum to 0.8, under 1"):
        params(teachers__a={"max_share": 0.5}, teachers__base={"max_share": 0.3})
    params(teachers__a={"max_share": 0.5}, teachers__base={"max_share": 0.5})


def test_cost_model_charges_prices_and_mean_tokens_on_the_subset() -> None:
    api = {"model": "api:big", "engine": "openai", "engine_options": {
        "base_url": "http://127.0.0.1:9/v1", "cost_per_million_prompt_tokens": 2.0, "cost_per_million_completion_tokens": 10.0}}
    priced = params(teachers__a=api, route={"budget": {"amount": 1.0, "unit": "usd"}})
    samples = {"a": [{"completion_tokens": 4}, {"completion_tokens": 8}], "base": [{"completion_tokens": 3}]}
    model = budget.cost_model(priced, samples)
    assert model["a"] == {"prompt_price": 2.0, "completion_price": 10.0, "overhead_tokens": len("Answer briefly.") / 4,
                          "mean_completion_tokens": 6.0}
    assert model["base"]["prompt_price"] == model["base"]["completion_price"] == 0.0
    prompts = [{"split": "router", "messages": [{"role": "user", "content": "x" * 40}]},
               {"split": "pool", "messages": [{"role": "user", "content": "x" * 40}]}]
    matrix = budget.cost_matrix("usd", model, ["a", "base"], prompts)
    assert matrix[0].tolist() == [0.0, 0.0]  # S was answered already
    assert matrix[1, 0] == pytest.approx(((10 + 15 / 4) * 2.0 + 6 * 10.0) / 1e6) and matrix[1, 1] == 0.0
    assert budget.cost_matrix("tokens", model, ["a", "base"], prompts)[1].tolist() == [6.0, 3.0]


def test_seconds_are_planned_per_token_on_the_subset_and_spent_as_measured() -> None:
    timed = params(route={"budget": {"amount": 10.0, "unit": "seconds"}})
    samples = {"a": [{"completion_tokens": 4, "seconds": 1.0}, {"completion_tokens": 12, "seconds": 3.0}],
               "base": [{"completion_tokens": 2, "seconds": 0.5}]}
    model = budget.cost_model(timed, samples)
    assert model["a"]["seconds_per_token"] == 0.25 and model["base"]["seconds_per_token"] == 0.25
    prompts = [{"id": "r", "split": "router", "messages": []}, {"id": "p", "split": "pool", "messages": []}]
    assert budget.cost_matrix("seconds", model, ["a", "base"], prompts).tolist() == [[0.0, 0.0], [2.0, 0.5]]  # mean 8 tokens
    answers = [{"id": "p", "teacher": "a", "completion_tokens": 8, "seconds": 1.5}, {"id": "r", "teacher": "a",
                                                                                    "completion_tokens": 8, "seconds": 9.0}]
    assert budget.spend("seconds", model, answers, {p["id"]: p for p in prompts}) == 1.5  # measured; S is free
    assert "seconds_per_token" not in budget.cost_model(timed, {t: [{"completion_tokens": 2}] for t in samples})["a"]


def routing(amount: float | None, capacity: list[int], cost: list[float]) -> route.Routing:
    """The three-teacher router of test_strategies (big for x > 0, small for x < 0) on 200 pool prompts."""
    prompts = [{"id": i, "split": "pool"} for i in IDS]
    bounds = route.Limits(np.tile(cost, (len(IDS), 1)), np.array(capacity), amount, "tokens",
                          {t: {"mean_completion_tokens": c} for t, c in zip(TEACHERS, cost)})
    return route.route(RouteConfig(), prompts, router_preferring((0, 2)), dict(zip(IDS, X)), SCORES, bounds)


def test_budget_and_caps_are_respected_and_reported() -> None:
    free = routing(None, [200, 200, 200], [5.0, 2.0, 1.0])
    assert free.assignment == route.route(RouteConfig(), [{"id": i, "split": "pool"} for i in IDS], router_preferring((0, 2)),
                                          dict(zip(IDS, X)), SCORES).assignment  # loose limits: the argmax
    spent = 100 * 5.0 + 100 * 1.0
    assert free.report["budget"]["unconstrained_spend"] == spent
    half = routing(spent / 2, [200, 200, 200], [5.0, 2.0, 1.0])
    plan = half.report["budget"]
    assert plan["planned_spend"] <= spent / 2 and plan["optimality_gap"] == 0.0
    assert sum(n * c for n, c in zip((len(half.assignment[t]) for t in TEACHERS), (5.0, 2.0, 1.0))) == plan["planned_spend"]
    assert 0 < plan["predicted_reward"]["kept"] < 1
    capped = routing(None, [30, 200, 200], [1.0, 1.0, 1.0])
    assert len(capped.assignment["big"]) == 30 and capped.report["teachers"]["big"]["share"] == 0.15
    # the 30 kept on "big" are those it is preferred for most (largest x), and each prompt's order starts with its teacher
    assert capped.assignment["big"] == sorted(IDS[-30:])
    assert all(capped.order[i][0] == t for t, ids in capped.assignment.items() for i in ids)


def test_plan_says_what_the_budgeted_plan_waits_for(tmp_path: Path) -> None:
    from persyn.project import plan

    budgeted = params(route={"budget": {"amount": 100, "unit": "tokens"}})
    result = plan.plan(budgeted, tmp_path / "absent.parquet", root=tmp_path)
    assert result["budget"]["student"]["ready"] is False
    assert "run `dvc repro fit_router@student`, then `persyn plan` again" in plan.render(result)
    assert plan.plan(params(), tmp_path / "absent.parquet", root=tmp_path)["budget"] is None
