"""Does PerSyn's premise hold on this benchmark? Read from the scored router subset S, before any
comparison: different teachers must be right on different prompts (headroom for a per-prompt choice
over the best single teacher), and where several are right, their answers must differ in how well
the student can learn them (learnability spread), or routing has nothing to choose.

Every number comes from S's verified quality (right: 1; a partial-credit verifier's 0.5 is not right)
and the student's learnability; the
headroom's 95% interval is a bootstrap over S's prompts (stats.mean_ci), the best single teacher and
the per-family choice taken on all of S (so the family oracle's headroom is in-sample: optimistic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from persyn.core import stats
from persyn.pipeline import router
from persyn.core.errors import PersynError

HEADROOM_NEEDED = 0.10  # the bar: 10 points over the best single teacher


def matrices(prompts: list[dict[str, Any]], scores: list[dict[str, Any]], teachers: list[str],
             source: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """S's prompt ids answered by every teacher (router.reward_matrices), their families ("all" where
    prompts have none), and quality and learnability as (prompt × teacher) arrays."""
    family = {p["id"]: p.get("family") or "all" for p in prompts}
    stale = next((r["id"] for r in scores if r["id"] not in family), None)
    if stale is not None:
        raise PersynError(f"{source}: record {stale}: field 'id': not in the prompts (stale file?)")
    ids, quality, learn = router.reward_matrices(scores, teachers, source)
    return ids, [family[i] for i in ids], quality, learn


def _headroom(choice: np.ndarray, base: np.ndarray) -> dict[str, float]:
    found = stats.mean_ci(choice - base)
    return {"points": found.estimate, "low": found.low, "high": found.high}


def premise(families: list[str], quality: np.ndarray, learn: np.ndarray, teachers: list[str]) -> dict[str, Any]:
    """The premise table: accuracy per family and teacher, headroom of the correctness oracle and of
    the family oracle over the best single teacher, disagreement, learnability spread, and a verdict."""
    names = sorted(set(families))
    rows = np.array(families)
    per_family = {}
    for name in names:
        block = quality[rows == name]
        means = block.mean(axis=0)
        order = np.argsort(-means, kind="stable")
        per_family[name] = {"prompts": int(len(block)), "accuracy": {t: float(m) for t, m in zip(teachers, means)},
                            "best": teachers[order[0]],
                            "margin": float(means[order[0]] - means[order[1]]) if len(teachers) > 1 else 0.0}
    overall = quality.mean(axis=0)
    best = int(overall.argmax())
    family_choice = np.array([quality[i, teachers.index(per_family[f]["best"])] for i, f in enumerate(families)])
    right = quality >= 1.0
    several = right.sum(axis=1) >= 2
    spreads = [float(np.ptp(learn[i, right[i]])) for i in np.flatnonzero(several)]
    best_somewhere = sorted({row["best"] for row in per_family.values() if row["margin"] > 0})
    headroom = _headroom(quality.max(axis=1), quality[:, best])
    full = right.astype(np.float64)  # partial credit counted as wrong
    full_best = int(full.mean(axis=0).argmax())
    return {
        "prompts": int(len(quality)),
        "teachers": teachers,
        "accuracy": {t: float(m) for t, m in zip(teachers, overall)},
        "best_single": teachers[best],
        "oracle_accuracy": float(quality.max(axis=1).mean()),
        "headroom": headroom,
        "full_credit": {"accuracy": {t: float(m) for t, m in zip(teachers, full.mean(axis=0))},
                        "best_single": teachers[full_best], "oracle_accuracy": float(full.max(axis=1).mean()),
                        "headroom": _headroom(full.max(axis=1), full[:, full_best])},
        "family_oracle_accuracy": float(family_choice.mean()),
        "family_headroom": _headroom(family_choice, quality[:, best]),
        "disagree_share": float((right.any(axis=1) & ~right.all(axis=1)).mean()),
        "all_wrong_share": float((~right.any(axis=1)).mean()),
        "several_right_share": float(several.mean()),
        "learnability_spread": {"prompts": len(spreads), "mean": float(np.mean(spreads)) if spreads else None,
                                "median": float(np.median(spreads)) if spreads else None},
        "families": per_family,
        "best_on_some_family": best_somewhere,
        "holds": bool(headroom["points"] >= HEADROOM_NEEDED and len(best_somewhere) >= 2),
    }


def markdown(table: dict[str, Any]) -> str:
    """The premise table as markdown: one row per family, then the summary lines."""
    teachers = table["teachers"]
    lines = [f"| family | S prompts | {' | '.join(teachers)} | best |", "|---|---|" + "---|" * len(teachers) + "---|"]
    for name, row in table["families"].items():
        cells = " | ".join(f"{row['accuracy'][t]:.2f}" for t in teachers)
        best = f"{row['best']} (+{100 * row['margin']:.0f})" if row["margin"] > 0 else "tie"
        lines.append(f"| {name} | {row['prompts']} | {cells} | {best} |")
    cells = " | ".join(f"**{table['accuracy'][t]:.3f}**" for t in teachers)
    lines.append(f"| **all** | {table['prompts']} | {cells} | {table['best_single']} |")
    head, fam, spread, strict = table["headroom"], table["family_headroom"], table["learnability_spread"], table["full_credit"]
    spread_text = (f"{spread['mean']:.3f} nats/token mean, {spread['median']:.3f} median, over {spread['prompts']} prompts"
                   if spread["prompts"] else "no prompt has two right answers")
    lines += [
        "",
        f"- correctness oracle {table['oracle_accuracy']:.3f} against the best single teacher ({table['best_single']}) "
        f"{table['accuracy'][table['best_single']]:.3f}: headroom **{100 * head['points']:.1f} points** "
        f"[95% CI {100 * head['low']:.1f}, {100 * head['high']:.1f}]",
        f"- counting only full credit as right: oracle {strict['oracle_accuracy']:.3f} against {strict['best_single']} "
        f"{strict['accuracy'][strict['best_single']]:.3f}: headroom {100 * strict['headroom']['points']:.1f} points "
        f"[{100 * strict['headroom']['low']:.1f}, {100 * strict['headroom']['high']:.1f}]",
        f"- family oracle (best teacher per family, chosen on S) {table['family_oracle_accuracy']:.3f}: "
        f"headroom {100 * fam['points']:.1f} points [{100 * fam['low']:.1f}, {100 * fam['high']:.1f}] (in-sample)",
        f"- some teachers right and some not on {100 * table['disagree_share']:.0f}% of S; no teacher right on "
        f"{100 * table['all_wrong_share']:.0f}%; two or more right on {100 * table['several_right_share']:.0f}%",
        f"- learnability spread among right answers (max − min of the student's mean log-likelihood): {spread_text}",
        f"- best on some family: {', '.join(table['best_on_some_family']) or 'none'}",
        f"- premise ({100 * HEADROOM_NEEDED:.0f}-point headroom and two teachers each best somewhere): "
        f"**{'holds' if table['holds'] else 'does not hold'}**",
    ]
    return "\n".join(lines) + "\n"
