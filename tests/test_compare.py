"""The comparison over draws (persyn/science/compare.py, persyn/science/comparison.py): the draws really differ (S, pool,
router seed) while the eval set stays the same; every arm's dataset is what its rule says, on planted
answers whose correctness the test knows; the results document is checked before it is written and is
what `persyn report --strategies` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_tasks import gym_raw

from persyn.params import config
from persyn.science import compare, comparison
from persyn.core.errors import PersynError
from persyn.report.gather import read_strategies

TEACHERS = ("gemma", "qwen", "qwen_steps")  # the default params' teachers


def gym_params(**prompt_keys: object) -> config.Params:
    """The default params (teachers a, b and base) on a reasoning-gym source, one student."""
    params = config.parse(gym_raw(count=90, eval_size=20, router_size=12, **prompt_keys))
    return params.for_student(sorted(params.students)[0])


def test_draws_differ_and_the_eval_set_does_not() -> None:
    params = gym_params()
    universe, evals = compare.universe(params)
    again_universe, again_evals = compare.universe(params)
    assert [p["id"] for p in evals] == [p["id"] for p in again_evals] and len(evals) == 20
    draws = compare.make_draws(universe, 5, 20, 30, seed=0)
    eval_ids = {p["id"] for p in evals}
    for draw in draws:
        assert len(draw.router_ids) == 20 and len(draw.pool_ids) == 30
        assert not set(draw.router_ids) & set(draw.pool_ids)  # S_d and P_d are disjoint
        assert not (set(draw.router_ids) | set(draw.pool_ids)) & eval_ids  # nothing evaluated is trained on
    assert len({d.router_ids for d in draws}) == 5 and len({d.pool_ids for d in draws}) == 5
    assert [d.seed for d in draws] == [0, 1, 2, 3, 4]  # each draw's router and training seed
    assert compare.make_draws(again_universe, 5, 20, 30, seed=0) == draws  # same seed, same draws
    with pytest.raises(PersynError, match="U holds"):
        compare.make_draws(universe, 1, 40, len(universe), seed=0)


def test_transfer_set_is_new_prompts_of_harder_and_left_out_families() -> None:
    params = gym_params()
    universe, evals = compare.universe(params)
    tasks = [{"family": "chain_sum", "config": {"min_terms": 4, "max_terms": 5, "min_digits": 2, "max_digits": 3}},
             {"family": "lcm", "config": {"max_value": 30}}]
    far = compare.transfer(tasks, 10, 1, {p["id"] for p in universe + evals})
    assert {p["family"] for p in far} == {"chain_sum", "lcm"} and {p["split"] for p in far} == {"transfer"}
    taken = {far[0]["id"]}
    with pytest.raises(PersynError, match="also a training or eval prompt"):
        compare.transfer(tasks, 10, 1, taken)


def planted(universe: list[dict], quality: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    """Answers and scores of every teacher on U: `quality[family][teacher]` is the teacher's planted
    quality on that family; learnability is highest for gemma, which is never right."""
    answers, scores = {}, {}
    for teacher in TEACHERS:
        answers[teacher] = {}
        for p in universe:
            q = quality[p["family"]][teacher]
            answers[teacher][p["id"]] = {"id": p["id"], "teacher": teacher, "model": f"model-{teacher}",
                                         "response": f"Answer: {p['reference'] if q else 'nothing'}",
                                         "finish_reason": "stop", "completion_tokens": 3, "request": ""}
            scores[(p["id"], teacher)] = {"id": p["id"], "teacher": teacher, "quality": q,
                                          "learnability": -0.5 if teacher == "gemma" else -2.0, "requests": []}
    return answers, scores


def test_every_arm_builds_what_its_rule_says() -> None:
    params = gym_params()
    universe, _ = compare.universe(params)
    families = sorted({p["family"] for p in universe})
    # qwen is right on the first family only, qwen_steps on every other one; gemma never
    quality = {f: {"qwen": float(f == families[0]), "qwen_steps": float(f != families[0]), "gemma": 0.0} for f in families}
    answers, scores = planted(universe, quality)
    draw = compare.make_draws(universe, 1, 30, 30, seed=0)[0]
    routed = set(draw.router_ids) | set(draw.pool_ids)
    family = {p["id"]: p["family"] for p in universe}
    rng = np.random.default_rng(0)
    inputs = {p["id"]: rng.normal(size=4) for p in universe}
    trained = {"persyn": compare.fit_router(params, draw, None, compare.subset_scores(scores, draw), inputs)}

    def built(arm: str) -> tuple[list[dict], dict]:
        return compare.build(arm, params, draw, universe, answers, scores, trained, inputs)

    strongest, facts = built("strongest")
    assert {r["teacher"] for r in strongest} == {"qwen_steps"} and len(strongest) == len(routed)
    assert facts["generations"] == 3 * 30 + 30  # every teacher on S_d, then one per pool prompt
    family_oracle, _ = built("family-oracle")
    assert all(r["teacher"] == ("qwen" if family[r["id"]] == families[0] else "qwen_steps") for r in family_oracle)
    assert all(r["quality"] == 1.0 for r in family_oracle)
    correct, correct_facts = built("correct-only")
    assert correct_facts["verified_records"] == correct_facts["records"] == len(routed)
    assert correct_facts["generations"] == 3 * 60  # Generate-then-Select: every teacher on every prompt
    oracle, _ = built("oracle")  # r mixes in learnability (α = 0.4): gemma's easy wrong answers can win
    assert len(oracle) == len(routed)
    gold, gold_facts = built("gold")
    assert all(r["quality"] == 1.0 and r["messages"][-1]["content"].startswith("Answer: ") for r in gold)
    assert gold_facts["generations"] == 0 and gold_facts["tokens"] == 0
    persyn, persyn_facts = built("persyn")
    assert len(persyn) == len(routed) and set(persyn_facts["shares"]) == set(families)
    random_arm, _ = built("random")
    assert len({r["teacher"] for r in random_arm}) == 3
    with pytest.raises(PersynError, match="unknown arm"):
        built("best")


def runs(arms: dict[str, list[list[float]]]) -> dict[tuple[str, int], dict]:
    facts = {"records": 10, "verified_records": 5, "tokens": 30, "generations": 40, "shares": {"f": {"a": 1.0}}}
    return {(arm, d): {"eval": row, "transfer": row[:4], "facts": facts}
            for arm, rows in arms.items() for d, row in enumerate(rows)}


DESIGN = {"draws": 5, "router_size": 10, "pool_size": 10, "universe": 40, "margin": 0.03, "alpha": 0.05,
          "teachers": ["a"], "transfer_families": ["f"], "transfer_left_out": ["f"], "machine": "test", "minutes": 0.0}


def test_results_on_planted_draws(tmp_path: Path) -> None:
    """gold is right on every prompt in every draw, persyn on half, strongest exactly as persyn: gold is
    better, strongest is equivalent (identical in every draw), and the report reads the file."""
    half = [[1.0, 0.0] * 4 for _ in range(5)]
    found = runs({"persyn": half, "strongest": half, "gold": [[1.0] * 8 for _ in range(5)]})
    results = comparison.document(found, ["persyn", "strongest", "gold"], list(range(5)),
                                  {"eval": [0.0] * 8, "transfer": [0.0] * 4}, DESIGN, "test")
    by_arm = {r["strategy"]: r for r in results["strategies"]}
    assert by_arm["gold"]["difference"]["verdict"] == "better" and by_arm["gold"]["difference"]["mean"] == 0.5
    assert by_arm["strongest"]["difference"]["verdict"] == "equivalent"
    assert "difference" not in by_arm["persyn"] and by_arm["untrained student"]["mean"] == 0.0
    path = tmp_path / "results.json"
    comparison.write(path, results)
    assert read_strategies(path) == json.loads(path.read_text())
    table = comparison.markdown(results)
    assert "| gold | 1.000 [1.000, 1.000] | +0.500 [" in table and "| better |" in table
    control = results["positive_control"]  # gold right everywhere, strongest on half: the control passes
    assert control["passed"] and control["mean"] == 0.5 and "Positive control, gold − strongest" in table


def test_a_document_that_breaks_its_contract_is_not_written(tmp_path: Path) -> None:
    half = [[1.0, 0.0] * 4 for _ in range(3)]
    results = comparison.document(runs({"persyn": half, "random": half}), ["persyn", "random"], [0, 1, 2],
                                  {"eval": [0.0] * 8, "transfer": [0.0] * 4}, {**DESIGN, "draws": 3}, "test")
    assert "positive_control" not in results  # no gold arm, no control
    results["strategies"][0]["mean"] = 2.0  # outside its own interval
    path = tmp_path / "results.json"
    with pytest.raises(PersynError, match="outside its interval"):
        comparison.write(path, results)
    assert not path.exists()
    with pytest.raises(PersynError, match="no result for draw 3"):
        comparison.document(runs({"persyn": half}), ["persyn"], [0, 1, 2, 3], {"eval": [], "transfer": []}, DESIGN, "t")


def test_a_failed_positive_control_says_no_verdict() -> None:
    half = [[1.0, 0.0] * 4 for _ in range(5)]
    results = comparison.document(runs({"persyn": half, "strongest": half, "gold": half}), ["persyn", "strongest", "gold"],
                                  list(range(5)), {"eval": [0.0] * 8, "transfer": [0.0] * 4}, DESIGN, "test")
    assert results["positive_control"]["passed"] is False  # gold no better than strongest
    assert "failed, so no arm's difference is a verdict on routing" in comparison.markdown(results)
