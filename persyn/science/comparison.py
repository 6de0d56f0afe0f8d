"""The results document of a comparison over draws (schemas/strategy_results.schema.json): built from
each (arm, draw)'s per-prompt eval scores, checked before it is written, and rendered as a table.

Every arm is compared with the reference arm (persyn) paired by draw and eval prompt
(persyn.core.stats.compare_draws): the interval comes from the hierarchical bootstrap over draws then
prompts, the p-value treats the draw as the unit, Holm's step-down corrects over the arms, and every
"no difference" must pass TOST against the margin stated before the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from persyn.core import io, stats
from persyn.core.errors import PersynError, where
from persyn.core.schemas import check

SCHEMA = "strategy_results"
REFERENCE = "persyn"
UNTRAINED = "untrained student"
CONTROL = ("gold", "strongest")  # the positive control: verified references must beat the strongest teacher


def matrix(runs: dict[tuple[str, int], dict[str, Any]], arm: str, split: str, draws: list[int]) -> np.ndarray:
    """(draws × prompts) scores of one arm on one eval split ('eval' or 'transfer')."""
    return np.array([runs[(arm, d)][split] for d in draws], dtype=np.float64)


def rows(runs: dict[tuple[str, int], dict[str, Any]], arms: list[str], draws: list[int], split: str,
         untrained: list[float], margin: float, with_facts: bool) -> list[dict[str, Any]]:
    """One row per arm (mean and interval; Δ vs persyn with its tests; the dataset's facts), then the
    untrained student."""
    reference = matrix(runs, REFERENCE, split, draws) if REFERENCE in arms else None
    compared = {a: stats.compare_draws(matrix(runs, a, split, draws), reference, margin)
                for a in arms if a != REFERENCE and reference is not None}
    adjusted = stats.holm({a: c.p_value for a, c in compared.items()}) if compared else {}
    out = []
    for arm in arms:
        scores = matrix(runs, arm, split, draws)
        ci = stats.hierarchical_ci(scores)
        row: dict[str, Any] = {"strategy": arm, "draws": len(draws), "mean": ci.estimate, "low": ci.low, "high": ci.high}
        if with_facts:
            facts = [runs[(arm, d)]["facts"] for d in draws]
            for key in ("records", "verified_records", "tokens"):
                row[key] = float(np.mean([f[key] for f in facts]))
            row["generations_used"] = int(round(np.mean([f["generations"] for f in facts])))
            row["shares"] = mean_shares([f["shares"] for f in facts])
        if arm in compared:
            c = compared[arm]
            row["difference"] = {"mean": c.difference.estimate, "low": c.difference.low, "high": c.difference.high,
                                 "p_value": c.p_value, "holm_p": adjusted[arm], "tost_p": c.tost_p, "mde": c.mde,
                                 "verdict": stats.verdict(c, adjusted[arm])}
        out.append(row)
    floor = stats.hierarchical_ci(np.asarray([untrained], dtype=np.float64))
    out.append({"strategy": UNTRAINED, "draws": 1, "mean": floor.estimate, "low": floor.low, "high": floor.high})
    return out


def mean_shares(per_draw: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Teacher shares per family, averaged over the draws (a teacher absent in a draw counts 0)."""
    families = sorted({f for shares in per_draw for f in shares})
    return {f: {t: float(np.mean([s.get(f, {}).get(t, 0.0) for s in per_draw]))
                for t in sorted({t for s in per_draw for t in s.get(f, {})})} for f in families}


def document(runs: dict[tuple[str, int], dict[str, Any]], arms: list[str], draws: list[int],
             untrained: dict[str, list[float]], design: dict[str, Any], command: str) -> dict[str, Any]:
    """The whole results document: eval and transfer tables, the design and the command."""
    missing = [(a, d) for a in arms for d in draws if (a, d) not in runs]
    if missing:
        raise PersynError(f"comparison: arm {missing[0][0]} has no result for draw {missing[0][1]} (run it again to resume)")
    margin = design["margin"]
    control = {}
    if all(arm in arms for arm in CONTROL):
        found = stats.compare_draws(*(matrix(runs, arm, "eval", draws) for arm in CONTROL), margin)
        control = {"positive_control": {
            "arm": CONTROL[0], "against": CONTROL[1], "mean": found.difference.estimate, "low": found.difference.low,
            "high": found.difference.high, "p_value": found.p_value,
            "passed": found.difference.low > 0 and found.p_value < design["alpha"]}}
    return {**control, "metric": "accuracy", "prompts": len(untrained["eval"]), "reference": REFERENCE, "command": command,
            "design": design,
            "strategies": rows(runs, arms, draws, "eval", untrained["eval"], margin, with_facts=True),
            "transfer": {"prompts": len(untrained["transfer"]), "families": design["transfer_left_out"],
                         "strategies": rows(runs, arms, draws, "transfer", untrained["transfer"], margin,
                                            with_facts=False)}}


def write(path: Path, results: dict[str, Any]) -> None:
    """Check the document against its schema and its own invariants, then write it atomically: a
    document that breaks the contract is never written."""
    check(results, SCHEMA, str(path))
    check_strategies(results, path)
    io.write_json(path, results, SCHEMA)


def check_strategies(results: dict[str, Any], path: Path) -> None:
    """What the schema cannot say of a strategy comparison: each strategy once, each interval holding its mean.
    `write` runs it before writing, `persyn report --strategies` after reading."""
    for name, rows in (("", results["strategies"]), ("transfer ", results.get("transfer", {}).get("strategies", []))):
        labels: set[str] = set()
        for index, row in enumerate(rows):
            if row["strategy"] in labels:
                raise PersynError(f"{where(path, f'{name}{index}', 'strategy')}: '{row['strategy']}' appears twice")
            labels.add(row["strategy"])
            for key, value in (("", row), ("difference.", row.get("difference"))):
                if value is not None and not value["low"] <= value["mean"] <= value["high"]:
                    raise PersynError(f"{where(path, f'{name}{index}', key + 'mean')}: {value['mean']} is outside its "
                                      f"interval [{value['low']}, {value['high']}]")


def markdown(results: dict[str, Any]) -> str:
    """The table for docs/results.md and the README: every arm with its CI, Δ vs persyn with CI, the
    Holm-adjusted p, the TOST p, the difference detectable at 80% power, the verdict, the dataset's facts
    and the transfer column."""
    transfer = {r["strategy"]: r for r in results["transfer"]["strategies"]}
    lines = [f"| arm | eval accuracy [95% CI] | Δ vs {REFERENCE} [95% CI] | Holm p | TOST p | MDE | verdict | records "
             "(verified) | generations | transfer accuracy [95% CI] | transfer Δ [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["strategies"]:
        far = transfer[row["strategy"]]
        d, fd = row.get("difference"), far.get("difference")
        lines.append("| " + " | ".join([
            row["strategy"], interval(row), interval(d, signed=True) if d else "–",
            f"{d['holm_p']:.2g}" if d else "–", f"{d['tost_p']:.2g}" if d else "–", f"{d['mde']:.3f}" if d else "–",
            d["verdict"] if d else "–",
            f"{row['records']:.0f} ({row['verified_records']:.0f})" if "records" in row else "–",
            str(row["generations_used"]) if "generations_used" in row else "–",
            interval(far), interval(fd, signed=True) if fd else "–"]) + " |")
    control = results.get("positive_control")
    if control:
        lines.append(f"\nPositive control, {control['arm']} − {control['against']} on eval: {interval(control, signed=True)}, "
                     f"p = {control['p_value']:.2g} (draws as the unit): "
                     + ("passed" if control["passed"] else "failed, so no arm's difference is a verdict on routing"))
    return "\n".join(lines)


def interval(value: dict[str, Any], signed: bool = False) -> str:
    form = "{:+.3f}" if signed else "{:.3f}"
    return f"{form.format(value['mean'])} [{form.format(value['low'])}, {form.format(value['high'])}]"
