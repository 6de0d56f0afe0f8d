"""Verified routing: an answer that fails verification is re-asked of the next teacher in the prompt's order.

Only math quality is verifiable (the final answer against the reference). Attempt 0 is the routed
answer; attempt k asks the k-th teacher after it in the prompt's route order, for the prompts whose
attempt k-1 failed. A router-subset prompt already has every teacher's answer (the sample stage's), so it
is read, never asked; a pool prompt is asked through the request cache, so an answer the teacher
gave in another experiment is reused. Under the oracle every teacher answered already: nothing to ask.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from persyn.core import layout
from persyn.sources.answers import verified
from persyn.core.errors import PersynError

Ask = Callable[[str, list[str]], list[dict[str, Any]]]


def primary_answers(order: dict[str, list[str]], generated: dict[str, list[dict[str, Any]]],
                    source: str) -> dict[str, dict[str, Any]]:
    """Attempt 0 of every routed prompt: the answer of the first teacher in its order. `source` names
    the file of a teacher's generated answers, with {teacher} in it (for the error naming a missing one)."""
    by_teacher = {t: {a["id"]: a for a in rows} for t, rows in generated.items()}
    primary = {}
    for prompt_id, teachers in order.items():
        answer = by_teacher.get(teachers[0], {}).get(prompt_id)
        if answer is None:
            raise PersynError(f"{source.format(teacher=teachers[0])}: record {prompt_id}: routed but not generated")
        primary[prompt_id] = answer
    return primary


def ask_in_order(fallback: int, order: dict[str, list[str]], primary: dict[str, dict[str, Any]],
                 prompts: dict[str, dict[str, Any]], subset: dict[str, dict[str, dict[str, Any]]],
                 ask: Ask) -> list[dict[str, Any]]:
    """The answers of attempts 1..fallback, each with its attempt, verified quality and whether S supplied it."""
    answers: list[dict[str, Any]] = []
    failing = sorted(i for i, a in primary.items() if verified(a["response"], prompts[i], layout.PROMPTS) < 1)
    for attempt in range(1, fallback + 1):
        wanted: dict[str, list[str]] = {}
        for prompt_id in failing:
            if attempt < len(order[prompt_id]):
                wanted.setdefault(order[prompt_id][attempt], []).append(prompt_id)
        found: list[dict[str, Any]] = []
        for teacher, ids in sorted(wanted.items()):
            known = subset.get(teacher, {})
            found += [{**known[i], "from_subset": True} for i in ids if i in known]
            rest = [i for i in ids if i not in known]
            found += [{**a, "from_subset": False} for a in (ask(teacher, rest) if rest else [])]
        for answer in found:
            answer.update(attempt=attempt, quality=verified(answer["response"], prompts[answer["id"]], layout.PROMPTS))
        answers += found
        failing = sorted(a["id"] for a in found if a["quality"] < 1)
    return sorted(answers, key=lambda a: (a["id"], a["attempt"]))


def metrics(primary: dict[str, dict[str, Any]], answers: Sequence[dict[str, Any]], prompts: dict[str, dict[str, Any]],
            records: Sequence[dict[str, Any]], fallback: int, applied: bool, teachers: Sequence[str]) -> dict[str, Any]:
    """Per routed teacher and in total: verified share before and after fallback, prompts recovered;
    per asked teacher: answers taken from S and extra generations (pool prompts asked)."""
    before = {i: verified(a["response"], prompts[i], layout.PROMPTS) >= 1 for i, a in primary.items()}
    recovered_by = {a["id"]: a["teacher"] for a in answers if a["quality"] >= 1}

    def block(ids: list[str], asked: list[dict[str, Any]]) -> dict[str, Any]:
        after = [i for i in ids if before[i] or i in recovered_by]
        return {"routed": len(ids),
                "verified_before": sum(before[i] for i in ids) / len(ids) if ids else 0.0,
                "verified_after": len(after) / len(ids) if ids else 0.0,
                "recovered": sum(not before[i] and i in recovered_by for i in ids),
                "asked": len(asked), "from_subset": sum(a["from_subset"] for a in asked),
                "extra_generations": sum(not a["from_subset"] for a in asked)}

    per_teacher = {}
    for teacher in teachers:
        mine = [i for i, a in primary.items() if a["teacher"] == teacher]
        per_teacher[teacher] = {**block(mine, [a for a in answers if a["teacher"] == teacher]),
                                "recovered_for_others": sum(t == teacher for t in recovered_by.values())}
    passed = [r for r in records if r["quality"]]
    return {"attempts": fallback, "applied": applied, "teachers": per_teacher,
            "total": {**block(sorted(primary), list(answers)), "records": len(records),
                      "verified_records": len(passed), "prompts_without_record": len(primary) - len(records)}}
