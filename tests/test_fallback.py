"""Verified routing on planted answers: exactly which prompts are re-asked of whom, which records are kept."""

from persyn.pipeline import dataset, fallback
from persyn.params.config import RouterConfig

REFERENCES = {f"{i:016x}": str(i) for i in range(6)}
PROMPTS = {i: {"id": i, "reference": r} for i, r in REFERENCES.items()}
SPLIT = {i: ("router" if n < 2 else "pool") for n, i in enumerate(REFERENCES)}
ORDER = {i: ["a", "b", "c"] if n % 2 == 0 else ["b", "c", "a"] for n, i in enumerate(REFERENCES)}
# which teacher answers which prompt right (prompt 5: nobody)
RIGHT = {"a": {0, 3}, "b": {1, 2}, "c": {4}}


def answer(teacher: str, prompt_id: str) -> dict:
    right = int(prompt_id, 16) in RIGHT[teacher]
    text = f"The answer is {REFERENCES[prompt_id] if right else 999}."
    return {"id": prompt_id, "teacher": teacher, "model": f"{teacher}@1", "response": text, "finish_reason": "stop",
            "completion_tokens": 5, "request": "0" * 64}


def run(attempts: int) -> tuple[list[dict], list[tuple[str, list[str]]]]:
    asked: list[tuple[str, list[str]]] = []

    def ask(teacher: str, ids: list[str]) -> list[dict]:
        asked.append((teacher, ids))
        return [answer(teacher, i) for i in ids]

    primary = {i: answer(order[0], i) for i, order in ORDER.items()}
    subset = {t: {i: answer(t, i) for i in REFERENCES if SPLIT[i] == "router"} for t in "abc"}
    return fallback.ask_in_order(attempts, ORDER, primary, PROMPTS, subset, ask), asked


def ids(*numbers: int) -> list[str]:
    return [f"{n:016x}" for n in numbers]


def test_failed_answers_go_to_the_next_teacher_in_order() -> None:
    answers, asked = run(2)
    # attempt 0: a(0) right, b(1) right, a(2) wrong, b(3) wrong, a(4) wrong, b(5) wrong
    # attempt 1: b(2) right, c(3) wrong, b(4) wrong, c(5) wrong; attempt 2: a(3) right, c(4) right, a(5) wrong
    assert asked == [("b", ids(2, 4)), ("c", ids(3, 5)), ("a", ids(3, 5)), ("c", ids(4))]  # S prompts 0-1: never asked
    assert [(a["id"], a["teacher"], a["attempt"], a["quality"]) for a in answers] == [
        (ids(2)[0], "b", 1, 1.0), (ids(3)[0], "c", 1, 0.0), (ids(3)[0], "a", 2, 1.0), (ids(4)[0], "b", 1, 0.0),
        (ids(4)[0], "c", 2, 1.0), (ids(5)[0], "c", 1, 0.0), (ids(5)[0], "a", 2, 0.0)]
    assert [a["from_subset"] for a in answers] == [False] * 7
    assert run(0) == ([], [])
    one, asked_once = run(1)
    assert asked_once == [("b", ids(2, 4)), ("c", ids(3, 5))] and len(one) == 4


def test_a_router_subset_prompt_is_read_from_the_sample_not_asked() -> None:
    order = {**ORDER, ids(1)[0]: ["c", "b", "a"]}  # prompt 1 is in S and c answers it wrong
    primary = {i: answer(o[0], i) for i, o in order.items()}
    subset = {t: {i: answer(t, i) for i in ids(0, 1)} for t in "abc"}
    asked: list[str] = []
    answers = fallback.ask_in_order(1, order, primary, PROMPTS, subset,
                                    lambda t, wanted: asked.extend(wanted) or [answer(t, i) for i in wanted])
    recovered = [a for a in answers if a["id"] == ids(1)[0]]
    assert recovered == [{**answer("b", ids(1)[0]), "from_subset": True, "attempt": 1, "quality": 1.0}]
    assert ids(1)[0] not in asked


def assembled(unverified: str, attempts: int = 2) -> list[dict]:
    answers, _ = run(attempts)
    prompts = [{"id": i, "messages": [{"role": "user", "content": f"q{i}"}], "reference": r, "split": SPLIT[i]}
               for i, r in REFERENCES.items()]
    routes = {t: sorted(i for i, o in ORDER.items() if o[0] == t) for t in "abc"}
    generated = {t: [answer(t, i) for i in routes[t]] for t in "abc"}
    return dataset.assemble(prompts, routes, generated, [], RouterConfig(alpha=0.4), True, answers, unverified, True)


def test_the_first_verified_attempt_is_kept_else_the_routed_answer_or_nothing() -> None:
    kept = {r["id"]: (r["teacher"], r["attempt"], r["quality"]) for r in assembled("keep")}
    assert kept == dict(zip(ids(0, 1, 2, 3, 4, 5), [("a", 0, 1.0), ("b", 0, 1.0), ("b", 1, 1.0), ("a", 2, 1.0),
                                                     ("c", 2, 1.0), ("b", 0, 0.0)]))
    dropped = {r["id"] for r in assembled("drop")}
    assert dropped == set(ids(0, 1, 2, 3, 4))
    assert {r["id"] for r in assembled("drop", attempts=0)} == set(ids(0, 1))  # no fallback: only right routed answers
    assert "attempt" not in dataset.assemble(
        [{"id": i, "messages": [{"role": "user", "content": "q"}], "reference": "0", "split": "pool"} for i in ids(0)],
        {"a": ids(0)}, {"a": [answer("a", ids(0)[0])]}, [], RouterConfig(alpha=0.4))[0]


def test_metrics_count_before_after_recovered_and_extra_generations() -> None:
    answers, _ = run(2)
    primary = {i: answer(o[0], i) for i, o in ORDER.items()}
    records = assembled("drop")
    summary = fallback.metrics(primary, answers, PROMPTS, records, 2, True, ["a", "b", "c"])
    total = summary["total"]
    assert (total["routed"], total["verified_before"], total["verified_after"], total["recovered"]) == (6, 2 / 6, 5 / 6, 3)
    assert (total["asked"], total["extra_generations"], total["from_subset"]) == (7, 7, 0)
    assert (total["records"], total["verified_records"], total["prompts_without_record"]) == (5, 5, 1)
    a, b, c = (summary["teachers"][t] for t in "abc")
    assert (a["routed"], a["verified_before"], a["verified_after"], a["recovered"]) == (3, 1 / 3, 1.0, 2)
    assert (b["routed"], b["verified_before"], b["verified_after"], b["recovered"]) == (3, 1 / 3, 2 / 3, 1)
    assert (a["asked"], b["asked"], c["asked"]) == (2, 2, 3)
    assert (a["recovered_for_others"], b["recovered_for_others"], c["recovered_for_others"]) == (1, 1, 1)


def test_fallback_answers_are_keyed_by_prompt_and_attempt() -> None:
    import pytest

    from persyn.core.errors import PersynError
    from persyn.core.schemas import check_records

    answers, _ = run(2)
    check_records(answers, "fallback_answer", "data/fallback.parquet")  # two attempts of one prompt are two records
    with pytest.raises(PersynError, match=r"record 1 \(id 0000000000000002\): field 'id': duplicate id and attempt"):
        check_records([answers[0], answers[0]], "fallback_answer", "data/fallback.parquet")
