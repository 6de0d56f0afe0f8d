"""Several students of one build side by side: each one's teacher shares, router regret and eval
accuracy trained against untrained (95% bootstrap intervals over the eval prompts), what the students
shared of the teachers' generations (the sharing stage's metrics), and each student's own sections under
anchors and chart ids prefixed with its name.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from persyn.core import layout
from persyn.core.io import read_json
from persyn.report import analysis, charts
from persyn.report.charts import Chart
from persyn.report.gather import Build, NotBuilt
from persyn.report.render import Block, Part, Table
from persyn.report.sections import attempt, f4, pct
from persyn.core.stats import Interval


def interval(value: Interval) -> str:
    return f"{value.estimate:.3f} [{value.low:.3f}, {value.high:.3f}]"


def row(build: Build, teachers: list[str]) -> list[str]:
    """One student's line of the comparison; '–' where a stage has not run."""
    def read(compute, default: str = "–"):
        try:
            return compute()
        except NotBuilt:
            return default

    shares = read(lambda: build.metrics("dataset", "assemble")["teachers"], {})
    router = read(lambda: build.metrics("router", "fit_router"), None)
    found = read(lambda: analysis.evaluation(build), None)
    regret = "–" if router is None else (f"{f4(router['router']['regret'])} (best single "
                                         f"{router['best_single']['teacher']} {f4(router['best_single']['regret'])})")
    gain = "–" if found is None else (f"{found.gain.difference.estimate:+.3f} [{found.gain.difference.low:+.3f}, "
                                      f"{found.gain.difference.high:+.3f}], p = {found.gain.p_value:.2g}")
    return [build.student, build.params.student.model,
            *[pct(shares[t]["share"]) if t in shares else "–" for t in teachers], regret,
            "–" if found is None else interval(found.trained), "–" if found is None else interval(found.untrained), gain]


def sharing(root: Path) -> list[Block]:
    path = root / layout.SHARING_METRICS
    if not path.is_file():
        return [NotBuilt("sharing", layout.SHARING_METRICS).line()]
    shared = read_json(path, "sharing_metrics")
    g = shared["generations"]
    return [f"The teachers answered the router subset S ({shared['router_subset']} prompts) once for all "
            f"{len(shared['students'])} students, and a pool prompt two students routed to the same teacher was "
            f"generated once: {g['this_build']} generations in this build against {g['separate_builds']} for one "
            f"build per student ({g['saved']} saved, {pct(g['saved_fraction'])}).",
            Table(["teacher", "routed pool prompts (all students)", "generated", "shared",
                   *[f"routed by {s}" for s in shared["students"]]],
                  [[t, str(v["requested"]), str(v["generated"]), str(v["shared"]),
                    *[str(v["students"].get(s, 0)) for s in shared["students"]]]
                   for t, v in shared["teachers"].items()])]


def comparison(root: Path, builds: list[Build]) -> list[Block]:
    teachers = builds[0].teachers
    rows = [row(b, teachers) for b in builds]
    evaluated = []
    for build in builds:
        try:
            found = analysis.evaluation(build)
        except NotBuilt:
            continue
        evaluated += [(f"{build.student} trained", found.trained), (f"{build.student} untrained", found.untrained)]
    chart = [charts.intervals("students-eval", "Eval score per student, trained vs untrained (95% intervals)",
                              [(label, i.estimate, i.low, i.high) for label, i in evaluated], "eval score", (0, 1))
             ] if evaluated else []
    return [f"Each student's own routed dataset ({layout.dataset('<student>')}), router "
            f"({layout.metrics('<student>', 'router')}: regret on its held-out part of S) and evaluation on the same "
            f"eval prompts ({layout.predictions('<student>')}: mean score, 95% bootstrap interval over prompts; "
            "trained − untrained with its sign-flip p-value).",
            Table(["student", "model", *[f"share {t}" for t in teachers], "router regret", "eval trained",
                   "eval untrained", "trained − untrained"], rows),
            *chart, *attempt(lambda: sharing(root))]


def namespaced(student: str, parts: list[Part]) -> list[Part]:
    """One student's sections under anchors, headings and chart ids that name it."""
    def block(b: Block) -> Block:
        return replace(b, plot_id=f"{student}-{b.plot_id}") if isinstance(b, Chart) else b

    return [(f"{student}-{anchor}", f"{student}: {heading}", [block(b) for b in blocks])
            for anchor, heading, blocks in parts]
