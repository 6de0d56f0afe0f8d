import pytest

from persyn.pipeline import dataset
from persyn.params.config import RouterConfig
from persyn.core.errors import PersynError
from persyn.core.schemas import check

PROMPTS = [{"id": f"{i:016x}", "messages": [{"role": "user", "content": f"q{i}"}], "reference": str(i),
            "split": "router" if i < 2 else "pool"} for i in range(4)]
ID = [p["id"] for p in PROMPTS]


def answer(i: int, teacher: str, response: str, finish_reason: str = "stop") -> dict:
    return {"id": ID[i], "teacher": teacher, "model": f"local:{teacher}@sha256:0", "response": response,
            "finish_reason": finish_reason, "completion_tokens": 5, "request": "0" * 64}


def test_routed_answers_become_records_with_rewards() -> None:
    routes = {"a": [ID[0], ID[2]], "b": [ID[1], ID[3]]}
    generated = {"a": [answer(0, "a", "The answer is 0."), answer(2, "a", "The answer is 5.")],
                 "b": [answer(1, "b", "1"), answer(3, "b", "The answer is 3.")]}
    scores = [{"id": ID[0], "teacher": "a", "quality": 1.0, "learnability": -0.5, "requests": []}]
    records = dataset.assemble(PROMPTS, routes, generated, scores, RouterConfig(alpha=0.4))
    assert [(r["teacher"], r["quality"], r["learnability"]) for r in records] == [
        ("a", 1.0, -0.5), ("b", 1.0, None), ("a", 0.0, None), ("b", 1.0, None)]
    assert records[2]["messages"][-1] == {"role": "assistant", "content": "The answer is 5."}
    summary = dataset.metrics(records, routes, PROMPTS, generated)
    check(summary, "dataset_metrics", "metrics/dataset.json")
    assert summary["generations"] == {"used": 2 * 2 + 2, "generate_then_select": 8, "saved_fraction": 0.25}
    assert summary["teachers"]["a"] == {"records": 2, "share": 0.5, "mean_quality": 0.5, "truncated": 0}
    assert "usage" not in summary  # counters of a run (tokens, cost, reused) are in runs/*.json, not the metrics


def test_oracle_keeps_the_best_answer_by_combined_reward() -> None:
    routes = {"a": ID[:2], "b": ID[:2]}
    generated = {"a": [answer(0, "a", "x"), answer(1, "a", "y")], "b": [answer(0, "b", "z"), answer(1, "b", "w")]}
    scores = [
        {"id": ID[0], "teacher": "a", "quality": 1.0, "learnability": -3.0},
        {"id": ID[0], "teacher": "b", "quality": 0.0, "learnability": -0.1},
        {"id": ID[1], "teacher": "a", "quality": 1.0, "learnability": -3.0},
        {"id": ID[1], "teacher": "b", "quality": 1.0, "learnability": -0.1},
    ]
    records = dataset.assemble(PROMPTS, routes, generated, scores, RouterConfig(alpha=0.4))
    assert [r["teacher"] for r in records] == ["a", "b"]  # quality wins at alpha 0.4; learnability breaks the tie
    records = dataset.assemble(PROMPTS, routes, generated, scores, RouterConfig(alpha=0.9))
    assert [r["teacher"] for r in records] == ["b", "b"]


def test_stale_and_missing_answers_are_named() -> None:
    with pytest.raises(PersynError, match=f"data/generated/<student>/a.parquet: record {ID[1]}: field 'id': not routed to a"):
        dataset.assemble(PROMPTS, {"a": [ID[0]]}, {"a": [answer(0, "a", "1"), answer(1, "a", "1")]}, [],
                         RouterConfig(alpha=0.4))
    with pytest.raises(PersynError, match=f"data/generated/<student>/a.parquet: record {ID[2]}: routed but not generated"):
        dataset.assemble(PROMPTS, {"a": [ID[0], ID[2]]}, {"a": [answer(0, "a", "1")]}, [], RouterConfig(alpha=0.4))


def test_truncated_answers_are_dropped_and_counted() -> None:
    routes = {"a": [ID[0], ID[2]], "b": [ID[1], ID[3]]}
    generated = {"a": [answer(0, "a", "The answer is 0."), answer(2, "a", "The answer i", "length")],
                 "b": [answer(1, "b", "1", "length"), answer(3, "b", "The answer is 3.")]}
    kept = dataset.assemble(PROMPTS, routes, generated, [], RouterConfig(alpha=0.4))
    assert [r["id"] for r in kept] == [ID[0], ID[3]] and {r["finish_reason"] for r in kept} == {"stop"}
    summary = dataset.metrics(kept, routes, PROMPTS, generated)
    check(summary, "dataset_metrics", "metrics/dataset.json")
    assert (summary["records"], summary["routed_prompts"], summary["truncated"]) == (2, 4, 2)
    assert summary["teachers"]["a"]["truncated"] == summary["teachers"]["b"]["truncated"] == 1
    # Generate-then-Select answers every routed prompt with every teacher, dropped answers or not (as `persyn plan`)
    assert summary["generations"]["generate_then_select"] == 2 * 4
    everything = dataset.assemble(PROMPTS, routes, generated, [], RouterConfig(alpha=0.4), drop_truncated=False)
    assert [r["finish_reason"] for r in everything] == ["stop", "length", "length", "stop"]


def test_oracle_falls_back_to_an_untruncated_answer() -> None:
    routes = {"a": ID[:1], "b": ID[:1]}
    generated = {"a": [answer(0, "a", "The answer i", "length")], "b": [answer(0, "b", "The answer is 0.")]}
    scores = [{"id": ID[0], "teacher": t, "quality": q, "learnability": -1.0, "requests": []}
              for t, q in (("a", 1.0), ("b", 0.0))]
    assert [r["teacher"] for r in dataset.assemble(PROMPTS, routes, generated, scores, RouterConfig(alpha=0.4))] == ["b"]


def test_a_dataset_of_only_truncated_answers_is_one_clear_error() -> None:
    generated = {"a": [answer(0, "a", "The answer i", "length")]}
    with pytest.raises(PersynError, match="every routed answer was cut at max_tokens"):
        dataset.assemble(PROMPTS, {"a": ID[:1]}, generated, [], RouterConfig(alpha=0.4))
