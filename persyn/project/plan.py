"""`persyn plan`: what a build will cost, before anything runs.

Route-then-Generate makes N·|S| generations on the router subset S (every teacher answers it) plus
one per pool prompt; Generate-then-Select makes N·(|S| + |P|). With k students the teachers still
answer S once, and a pool prompt two students route to the same teacher is generated once: between
|P| (all agree) and min(k, N)·|P| pool generations, against k·(N·|S| + |P|) for one build per
student; once every student's routes exist, the exact count. Token counts are upper bounds
(every answer at max_tokens) and prompt tokens are estimated at 4 characters per token, since the
teachers' tokenizers may not be on this machine yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persyn.core import io, layout
from persyn.pipeline import budget, prompts, sharing
from persyn.pipeline.budget import CHARACTERS_PER_TOKEN
from persyn.params.config import Params
from persyn.core.errors import PersynError


@dataclass(frozen=True)
class Split:
    """How many prompts each role gets, and where that number came from."""

    router: int
    pool: int
    eval: int
    eval_shifted: int
    prompt_characters: float
    source: str


def split_sizes(params: Params, built: Path = Path(layout.PROMPTS)) -> Split:
    """Exact sizes from the prompt source when it is local (the prompts stage's own code); for a hub
    dataset, prompts.count as an upper bound (before dedupe), or, with count = 0, the built
    data/prompts.parquet."""
    config = params.prompts
    if config.source == "hf" and config.count:
        pool = config.count - config.router_size - config.eval_size
        return Split(config.router_size, pool, config.eval_size, config.shifted_eval_size, 0.0,
                     f"prompts.count = {config.count}, at most")
    if config.source == "hf":
        if not built.is_file():
            raise PersynError("plan: prompts.source = 'hf' with count = 0; set prompts.count or run "
                              "`dvc repro prompts` first so the plan can count the prompts")
        records = io.read_parquet(built, "prompt")
        origin = f"{built}, built earlier: rerun `dvc repro prompts` after changing [prompts]"
    else:
        records = prompts.build(config, require_reference=params.quality.kind == "math")
        origin = config.path or config.source
    counts = prompts.split_counts(records)
    characters = sum(len(m["content"]) for r in records for m in r["messages"]) / max(len(records), 1)
    return Split(counts["router"], counts["pool"], counts["eval"], counts["eval_shifted"], characters, origin)


def budgeted(params: Params, root: Path) -> dict[str, Any] | None:
    """Each student's routing under route.budget / teachers' caps, computed from S's answers, its scores and
    its router under `root` (what the build will then spend on the pool); None when neither is set."""
    if not budget.constrained(params):
        return None
    from persyn.pipeline import route

    plans = {}
    for student in params.students:
        if not (root / layout.router(student) / "router.json").is_file():
            plans[student] = {"ready": False, "note": f"the budgeted plan needs the router subset answered and the "
                                                      f"router fitted: run `dvc repro fit_router@{student}`, then "
                                                      "`persyn plan` again"}
        else:
            plans[student] = {"ready": True, **route.from_artifacts(params, student, root).report["budget"]}
    return plans


def routed(params: Params, root: Path) -> dict[str, Any] | None:
    """The sharing stage's count (layout.SHARING_METRICS) from every student's route files under `root`, once they all exist."""
    if not all((root / layout.routes_dir(s)).is_dir() for s in params.students):
        return None
    splits = {p["id"]: p["split"] for p in io.read_parquet(root / layout.PROMPTS, "prompt")}
    routes = {s: {p.stem: {r["id"] for r in io.read_parquet(p, "route")}
                  for p in sorted((root / layout.routes_dir(s)).glob("*.parquet"))} for s in params.students}
    return sharing.summary(routes, splits, sorted(params.teachers))["generations"]


def pool_spread(strategy: str, teachers: int, students: int) -> int:
    """How many teachers a pool prompt can reach across the students: every teacher under oracle; one
    under fixed:<teacher> and strongest (chosen by answer quality on S, the same for every student);
    otherwise one per student (persyn, car and the seeded draws may differ by student)."""
    if strategy == "oracle":
        return teachers
    if strategy.startswith("fixed:") or strategy == "strongest":
        return 1
    return min(students, teachers)


def plan(params: Params, built: Path = Path(layout.PROMPTS), root: Path = Path(".")) -> dict[str, Any]:
    """Generations, token upper bounds and cost per teacher, for this strategy and Generate-then-Select,
    for every student with the teachers' answers shared, and the budgeted routing when a budget or cap is set.
    Every teacher answers S; the pool goes to the routed teacher, to the fixed one, or to every teacher (oracle)."""
    split = split_sizes(params, built)
    strategy = params.route.strategy
    oracle = strategy == "oracle"
    fixed = strategy.removeprefix("fixed:") if strategy.startswith("fixed:") else None
    teachers = {}
    for name, teacher in params.teachers.items():
        sampling = teacher.sampling
        system = len(teacher.system_prompt or teacher.prompt_template or "")
        prompt_tokens = (split.prompt_characters + system) / CHARACTERS_PER_TOKEN
        most = split.router + split.pool if fixed in (None, name) else split.router
        price_in, price_out = budget.prices(teacher)
        teachers[name] = {
            "engine": sampling.engine,
            "model": teacher.model,
            "fewest": most if oracle or fixed else split.router,
            "most": most,
            "max_completion_tokens": most * sampling.max_tokens,
            "prompt_tokens_per_request": round(prompt_tokens),
            "cost_per_generation_usd": (prompt_tokens * price_in + sampling.max_tokens * price_out) / 1e6,
        }
    n, k = len(teachers), len(params.students)
    spread = pool_spread(strategy, n, k)
    fewest = n * (split.router + split.pool) if oracle else n * split.router + split.pool
    select_all = n * (split.router + split.pool)
    pool_costs = sorted((t["cost_per_generation_usd"] for name, t in teachers.items() if fixed in (None, name)),
                        reverse=True)
    return {
        "strategy": strategy,
        "students": sorted(params.students),
        "prompts": {"router": split.router, "pool": split.pool, "eval": split.eval, "eval_shifted": split.eval_shifted,
                    "source": split.source},
        "teachers": teachers,
        "generations": {"planned": fewest, "planned_most": n * split.router + spread * split.pool,
                        "generate_then_select": select_all,
                        "saved_fraction": 1 - fewest / select_all if select_all else 0.0,
                        "separate_builds": k * fewest, "routed": routed(params, root)},
        "learnability_scores": k * (n * split.router if not oracle else select_all),
        "cost_usd_at_most": sum(t["cost_per_generation_usd"] for t in teachers.values()) * split.router
                            + sum(pool_costs[:spread]) * split.pool,
        "budget": budgeted(params, root),
    }


def render_budget(plan_budget: dict[str, Any]) -> list[str]:
    """The budgeted routing as lines: spend planned against the budget, reward kept, per-teacher shares."""
    if not plan_budget["ready"]:
        return ["", f"budget: {plan_budget['note']}"]
    b, reward = plan_budget, plan_budget["predicted_reward"]
    amount = "no budget (caps only)" if b["amount"] is None else f"budget {b['amount']:.6g} {b['unit']}"
    lines = ["", f"{amount}: planned spend {b['planned_spend']:.6g} {b['unit']} on the pool "
                 f"(unconstrained {b['unconstrained_spend']:.6g}); predicted reward kept {reward['kept']:.1%}",
             f"{'teacher':<12} {'cap':>6} {'prompts':>8} {'share':>7} {'planned spend':>14} {'cost/answer basis':>18}"]
    for name, t in b["teachers"].items():
        basis = f"{t['mean_completion_tokens']:.1f} tok"
        lines.append(f"{name:<12} {t['cap']:>6} {t['prompts']:>8} {t['share']:>7.1%} {t['planned_spend']:>14.6g} {basis:>18}")
    return lines


def render(result: dict[str, Any]) -> str:
    """The plan as a terminal table."""
    p, g = result["prompts"], result["generations"]
    lines = [
        f"{prompts.describe_counts(p)} (from {p['source']}); the teachers answer S and P",
        f"strategy: {result['strategy']}",
        "",
        f"{'teacher':<12} {'engine':<13} {'generations':>17} {'max completion tokens':>22}  model",
    ]
    for name, t in result["teachers"].items():
        span = f"{t['fewest']}–{t['most']}" if t["fewest"] != t["most"] else str(t["most"])
        lines.append(f"{name:<12} {t['engine']:<13} {span:>17} {t['max_completion_tokens']:>22}  {t['model']}")
    students = result["students"]
    lines += ["", f"generations: {g['planned']} planned against {g['generate_then_select']} for Generate-then-Select "
                  f"({g['saved_fraction']:.0%} saved)"]
    if len(students) > 1:
        lines.append(f"{len(students)} students ({', '.join(students)}) share the teachers' answers: "
                     f"{g['planned']}–{g['planned_most']} generations against {g['separate_builds']} for one build "
                     "per student")
    if g["routed"]:
        r = g["routed"]
        lines.append(f"routed (data/routes): {r['this_build']} generations against {r['separate_builds']} for one "
                     f"build per student ({r['saved']} shared)")
    lines.append(f"student log-likelihood scores: {result['learnability_scores']}")
    if result["cost_usd_at_most"]:
        lines.append(f"API cost: at most ${result['cost_usd_at_most']:.2f} (every answer at max_tokens)")
    for student, planned in (result["budget"] or {}).items():
        lines += render_budget(planned) if len(students) == 1 else ["", f"student {student}:", *render_budget(planned)]
    return "\n".join(lines)
