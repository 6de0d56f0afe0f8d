"""What several students share: a prompt two students route to the same teacher is generated once.

A generation's request-cache key names the teacher's model, template, sampling, seed and prompt, and
nothing of the student, so whichever student's generate stage asks first generates and the others
read the answer back. Per teacher, the union of the students' routed pool prompts is what this build
generates, and the sum is what one build per student would (each also answering the router subset S
again). Fallback re-asks and the evaluation are per student and not counted here.
"""

from __future__ import annotations

from typing import Any


def summary(routes: dict[str, dict[str, set[str]]], splits: dict[str, str], teachers: list[str]) -> dict[str, Any]:
    """The sharing metrics from every student's routes (student → teacher → prompt ids) and each
    prompt's split; the router subset S is answered once by every teacher in either accounting."""
    students = sorted(routes)
    subset = sum(split == "router" for split in splits.values())
    per_teacher = {}
    for teacher in teachers:
        pool = {s: {i for i in routes[s].get(teacher, set()) if splits[i] == "pool"} for s in students}
        union = set().union(*pool.values()) if pool else set()
        requested = sum(len(ids) for ids in pool.values())
        per_teacher[teacher] = {"requested": requested, "generated": len(union), "shared": requested - len(union),
                                "students": {s: len(ids) for s, ids in pool.items()}}
    this_build = len(teachers) * subset + sum(t["generated"] for t in per_teacher.values())
    separate = len(students) * len(teachers) * subset + sum(t["requested"] for t in per_teacher.values())
    return {
        "students": students,
        "router_subset": subset,
        "teachers": per_teacher,
        "generations": {"this_build": this_build, "separate_builds": separate, "saved": separate - this_build,
                        "saved_fraction": 1 - this_build / separate if separate else 0.0},
    }
