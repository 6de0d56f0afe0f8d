"""Verified routing and budgeted routing under real `dvc repro`, on tiny models whose every teacher
answer is planted in the request cache beforehand: the test knows which answers are right and what
each costs, so it knows exactly which prompts are re-asked, which records are kept, what is spent."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_pipeline import ALL_STAGES

from persyn.params import config
from persyn.pipeline import prompts, synthesis
from persyn.pipeline.cache import RequestCache, request_key
from persyn.engines import Completion
from persyn.core.models import resolve
from persyn.testing.dvcproject import Project, make_project, params_toml

pytestmark = pytest.mark.slow

TEACHERS = ("a", "b", "base")
TOKENS = {"a": 4, "b": 6, "base": 2}  # every planted answer of a teacher has this many completion tokens
SECONDS = {"a": 1.0, "b": 0.75, "base": 0.5}  # … and took this long: seconds rank the teachers otherwise than tokens
COSTS = {"tokens": TOKENS, "seconds": SECONDS}
INSIDE = {"encoder": Path("models/encoder"), "teacher_a": Path("models/teacher_a"), "teacher_b": Path("models/teacher_b"),
          "base": Path("models/base"), "student": Path("models/student")}
MODEL_OF = {"a": "teacher_a", "b": "teacher_b", "base": "base"}


def three_teachers() -> str:
    return params_toml(INSIDE) + f"""
[teachers.b]
model = "local:{INSIDE['teacher_b']}"
system_prompt = "Answer in one line."
"""


def right(teacher: str, position: int) -> bool:
    """Planted correctness by the prompt's position among the routed ids: a, b, base, nobody, in turn."""
    return position % 4 == TEACHERS.index(teacher)


def plant(project: Project) -> dict[str, dict]:
    """Every teacher's answer to every routed prompt, written to the project's request cache; returns
    the routed prompts by id, each with its position."""
    params = config.load(project.path / "params.toml", models_here=False)  # read from outside the project
    routed = sorted((p for p in prompts.build(params.prompts, require_reference=True) if p["split"] in ("router", "pool")),
                    key=lambda p: p["id"])
    with RequestCache(project.cache / "requests" / "requests.sqlite") as cache:
        for name in TEACHERS:
            model = resolve(f"local:{project.path / 'models' / MODEL_OF[name]}")
            payloads = synthesis.teacher_payloads(params.teacher(name), model, [p["messages"] for p in routed])
            answers = {request_key(payload): Completion(f"The answer is {p['reference'] if right(name, n) else 987654}.",
                                                        "stop", 10, TOKENS[name], seconds=SECONDS[name]).__dict__
                       for n, (p, payload) in enumerate(zip(routed, payloads))}
            cache.put_many("generate", model.identity, answers)
    return {p["id"]: {**p, "position": n} for n, p in enumerate(routed)}


@pytest.fixture(scope="module")
def planted(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict, set[str]]:
    project = make_project(tmp_path_factory.mktemp("planted"), tmp_path_factory.mktemp("planted-cache"), three_teachers(),
                           {name: tiny_models[name] for name in INSIDE})
    routed = plant(project)
    return project, routed, project.repro()


@pytest.fixture()
def project(planted: tuple[Project, dict, set[str]], tmp_path: Path) -> Project:
    return planted[0].copy(tmp_path)


def generate_entries(project: Project) -> int:
    """Teachers' answers in the request cache (the evaluation's student answers left out)."""
    teachers = tuple(f"local:{m}@" for m in MODEL_OF.values())
    with RequestCache(project.cache / "requests" / "requests.sqlite") as cache:
        return sum(n for model, kind, n, _ in cache.stats() if kind == "generate" and model.startswith(teachers))


def records(project: Project) -> dict[str, dict]:
    return {r["id"]: r for f in sorted((project.path / "data/dataset/student").glob("train-*.parquet"))
            for r in pl.read_parquet(f).to_dicts()}


def order(project: Project) -> dict[str, list[str]]:
    return {r["id"]: r["teachers"] for r in pl.read_parquet(project.path / "data/route_order/student.parquet").to_dicts()}


def test_default_build_asks_nothing_more(planted: tuple[Project, dict, set[str]]) -> None:
    project, routed, ran = planted
    assert ran == ALL_STAGES | {"generate@student-b", "sample@b", "score@student-b"}
    assert pl.read_parquet(project.path / "data/fallback/student.parquet").height == 0
    kept = records(project)
    assert len(kept) == len(routed) and all("attempt" not in r for r in kept.values())
    metrics = json.loads(project.file_bytes("metrics/student/dataset.json"))
    assert "fallback" not in metrics and "budget" not in metrics
    assert json.loads(project.file_bytes("metrics/student/route.json"))["budget"] is None


def test_fallback_reasks_exactly_the_failed_prompts_and_reruns_exactly_what_depends_on_it(
        planted: tuple[Project, dict, set[str]], project: Project) -> None:
    routed = planted[1]
    routes = {p.name: p.read_bytes() for p in (project.path / "data/routes/student").glob("*.parquet")}
    entries = generate_entries(project)
    project.set_param('strategy = "persyn"', 'strategy = "persyn"\nfallback = 2')
    assert project.repro() == {"route@student", "fallback@student", "assemble@student", "train@student",
                               "evaluate@student"}
    assert routes == {p.name: p.read_bytes() for p in (project.path / "data/routes/student").glob("*.parquet")}
    assert generate_entries(project) == entries  # every extra answer came through the cache: nothing generated twice

    asked, kept = set(), {}
    for prompt_id, teachers in order(project).items():
        position = routed[prompt_id]["position"]
        kept[prompt_id] = (teachers[0], 0)
        for attempt, teacher in enumerate(teachers):
            if attempt:
                asked.add((prompt_id, teacher, attempt))
            if right(teacher, position):
                kept[prompt_id] = (teacher, attempt)
                break
    extra = pl.read_parquet(project.path / "data/fallback/student.parquet").to_dicts()
    assert {(a["id"], a["teacher"], a["attempt"]) for a in extra} == asked
    assert all(a["from_subset"] == (routed[a["id"]]["split"] == "router") for a in extra)
    assert {i: (r["teacher"], r["attempt"]) for i, r in records(project).items()} == kept

    total = json.loads(project.file_bytes("metrics/student/dataset.json"))["fallback"]["total"]
    before = sum(right(t[0], routed[i]["position"]) for i, t in order(project).items())
    assert total["verified_before"] == before / len(routed)
    assert total["verified_after"] == sum(routed[i]["position"] % 4 != 3 for i in routed) / len(routed)
    assert total["recovered"] == total["verified_after"] * len(routed) - before
    assert total["extra_generations"] == sum(routed[a[0]]["split"] == "pool" for a in asked)

    project.set_param("drop_truncated = false", 'drop_truncated = false\nunverified = "drop"')
    assert project.repro() == {"assemble@student", "train@student", "evaluate@student"}
    assert set(records(project)) == {i for i in routed if routed[i]["position"] % 4 != 3}


def pool_spend(project: Project, unit: str = "tokens") -> float:
    """Completion tokens (or seconds) of the routed pool answers, as planted: what the build really spent."""
    pool = {i for i, r in records(project).items() if r["split"] == "pool"}
    return float(sum(COSTS[unit][p.stem] * len(set(pl.read_parquet(p)["id"].to_list()) & pool)
                     for p in (project.path / "data/routes/student").glob("*.parquet")))


@pytest.mark.parametrize("unit", ["tokens", "seconds"])
def test_a_budget_is_planned_before_generation_and_spent_exactly(project: Project, unit: str) -> None:
    # The router fitted on all of S sends every pool prompt to the cheapest teacher here, which leaves a
    # budget nothing to bind; the held-out fit (refit_on_all = false) routes some to dearer ones.
    project.set_param("epochs = 50", "epochs = 50\nrefit_on_all = false")
    project.repro()
    unconstrained = pool_spend(project, unit)
    cheapest = min(COSTS[unit].values()) * sum(r["split"] == "pool" for r in records(project).values())
    assert cheapest < unconstrained
    amount = (cheapest + unconstrained) / 2  # halfway between the cheapest routing and the router's argmax
    project.set_param('strategy = "persyn"', f'strategy = "persyn"\nbudget = {{amount = {amount}, unit = "{unit}"}}')
    project.run("persyn", "plan", "--json", "plan.json")  # before anything is generated for the new route
    plan = json.loads((project.path / "plan.json").read_text())["budget"]["student"]  # per student
    assert plan["ready"] and plan["unconstrained_spend"] == unconstrained and plan["planned_spend"] <= amount
    assert plan["optimality_gap"] == 0.0 and plan["predicted_reward"]["routed"] < plan["predicted_reward"]["unconstrained"]
    assert 0 <= plan["predicted_reward"]["kept"] <= 1
    project.repro()
    spent = json.loads(project.file_bytes("metrics/student/dataset.json"))["budget"]
    assert spent["actual_spend"] == plan["planned_spend"] == pool_spend(project, unit) and spent["estimate_error"] == 0.0
    assert spent["within_budget"] and spent["actual_spend"] <= amount
    route_plan = json.loads(project.file_bytes("metrics/student/route.json"))["budget"]
    assert {k: v for k, v in route_plan.items()} == {k: v for k, v in plan.items() if k != "ready"}


def test_max_share_caps_a_teacher(project: Project) -> None:
    shares = json.loads(project.file_bytes("metrics/student/route.json"))["teachers"]
    top = max(shares, key=lambda t: shares[t]["share"])
    routed = json.loads(project.file_bytes("metrics/student/route.json"))["routed_prompts"]
    cap = shares[top]["prompts"] // 2
    project.set_param(f'model = "local:{INSIDE[MODEL_OF[top]]}"',
                      f'model = "local:{INSIDE[MODEL_OF[top]]}"\nmax_share = {cap / routed}')
    project.repro()
    capped = json.loads(project.file_bytes("metrics/student/route.json"))
    assert capped["teachers"][top]["prompts"] == cap  # the cap binds: the router wanted twice as many
    assert sum(r["teacher"] == top for r in records(project).values()) == cap
    assert json.loads(project.file_bytes("metrics/student/dataset.json"))["budget"]["shares"][top] == cap / routed
