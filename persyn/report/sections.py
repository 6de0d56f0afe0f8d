"""What the report says: its sections, each a list of paragraphs, tables and charts built from the
gathered artifacts (persyn.report.gather) and what was computed from them (persyn.report.analysis).

A section whose inputs are missing says which stage to run instead. Same artifacts, same blocks:
no timestamps, seeded samples, sorted rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from persyn.core import layout
from persyn.report import analysis, charts
from persyn.report.gather import Build, NotBuilt, read_strategies
from persyn.report.render import Block, Part, Table

SAMPLES = 5
ANSWER_CHARS = 600


def f4(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def pct(value: float) -> str:
    return f"{value:.1%}"


def attempt(blocks: Callable[[], list[Block]]) -> list[Block]:
    try:
        return blocks()
    except NotBuilt as missing:
        return [missing.line()]


def summary(build: Build) -> list[Block]:
    params = build.params

    def identity(teacher: str) -> str:
        try:
            return next(iter(build.samples[teacher].values()))["model"]
        except (NotBuilt, StopIteration):
            return params.teachers[teacher].model

    def generations() -> list[Block]:
        built = build.metrics("dataset", "assemble")
        g = built["generations"]
        return [Table(["dataset", "value"], [["records", str(built["records"])], ["generations used", str(g["used"])],
                                             ["Generate-then-Select would use", str(g["generate_then_select"])],
                                             ["saved", pct(g["saved_fraction"])]])]

    settings = [["student", params.student.model], ["router.alpha", str(params.router.alpha)],
                ["router.normalisation", params.router.normalisation], ["route.strategy", params.route.strategy]]
    return [Table(["setting", "value"], settings),
            Table(["teacher", "model identity"], [[t, identity(t)] for t in build.teachers]), *attempt(generations)]


def shares(build: Build) -> list[Block]:
    teachers = build.metrics("dataset", "assemble")["teachers"]
    names = sorted(teachers)
    return [charts.bars("shares", "Share of dataset records per teacher", names,
                        {"share": [teachers[t]["share"] for t in names]}, pct),
            Table(["teacher", "records", "share", "mean quality"],
                  [[t, str(teachers[t]["records"]), pct(teachers[t]["share"]), f4(teachers[t]["mean_quality"])]
                   for t in names])]


def rewards(build: Build) -> list[Block]:
    quality = {t: [r["quality"] for r in build.scores[t]] for t in build.teachers}
    learn = {t: [r["learnability"] for r in build.scores[t]] for t in build.teachers}
    return [f"Raw rewards of every teacher's answers on the router subset S (data/scores/{build.student}), before "
            "normalisation.",
            charts.histograms("quality-histogram", "Quality per teacher", quality, "raw quality r_q"),
            charts.histograms("learnability-histogram", "Learnability per teacher (student's mean token "
                              "log-likelihood)", learn, "raw learnability r_l"),
            Table(["teacher", "answers", "mean quality", "mean learnability"],
                  [[t, str(len(quality[t])), f4(float(np.mean(quality[t]))), f4(float(np.mean(learn[t])))]
                   for t in build.teachers])]


def router_section(build: Build) -> list[Block]:
    metrics = build.metrics("router", "fit_router")
    best = metrics["best_single"]
    labels = ["router", f"best single ({best['teacher']})", "random"]
    choices = [metrics["router"], best, metrics["random"]]
    refit = metrics.get("routing_fit", {})
    routes = (f" The router that routes was then refitted on all {refit['prompts']} prompts of S "
              "(router.refit_on_all)." if refit.get("on") == "all" and metrics["evaluated_on"] == "validation" else "")
    return [f"On the {metrics['prompts']} {metrics['evaluated_on']} prompts of S (router trained on "
            f"{metrics['train_prompts']}); regret = oracle r − chosen r, top-1 = chose an oracle teacher. "
            f"Pairwise accuracy {f4(metrics['pairwise_accuracy'])} on {metrics['pairs']} pairs.{routes}",
            charts.bars("router-regret", "Mean regret (lower is better)", labels,
                        {"regret": [c["regret"] for c in choices]}, f4),
            charts.bars("router-top1", "Top-1 agreement with the oracle teacher", labels,
                        {"top-1": [c["top1"] for c in choices]}, f4, top=1.0),
            Table(["choice", "regret", "top-1"], [[n, f4(c["regret"]), f4(c["top1"])] for n, c in zip(labels, choices)]),
            *attempt(lambda: calibration(build))]


def calibration(build: Build) -> list[Block]:
    routed = analysis.routing(build)
    bins = analysis.calibration(routed)
    series: dict[str, list[tuple[float, float]]] = {}
    for b in bins:
        series.setdefault(b.group, []).append((b.confidence, b.best))
    fitted = "all of S" if routed.fit_on == "all" else "the training prompts"
    measured = layout.metrics(build.student, "router")
    which = ("all router-subset prompts, by the routing router: the held-out ids saved with the router do not "
             f"reproduce {measured}" if routed.validation is None else
             f"the validation prompts (the held-out ids saved with the router), by the fit that {measured} "
             f"measured, and apart {fitted}, by the routing router fitted on them (in sample)")
    return [f"Calibration on {which}: the confidence of the router's choice (softmax over its coefficients) "
            f"against how often it was the best teacher by combined reward r, in {analysis.CALIBRATION_BINS} "
            f"equal-width bins from 1/N to 1.",
            charts.lines("calibration", "Router calibration: confidence of its choice vs how often it was best",
                         series, "predicted confidence", "observed: chosen teacher was best", (0, 1), (0, 1),
                         diagonal=True),
            Table(["prompts", "confidence bin", "count", "mean confidence", "observed best"],
                  [[b.group, f"{b.low:.2f}–{b.high:.2f}", str(b.count), f4(b.confidence), f4(b.best)] for b in bins])]


def sweep(experiments: list[dict[str, Any]]) -> list[Block]:
    if not experiments:
        return ["no experiments yet (try dvc exp run -S 'params.toml:router.alpha=0.2', then persyn report again)"]
    blocks: list[Block] = []
    for key, plot_id, label in (("accuracy", "sweep-accuracy", "eval accuracy (trained)"),
                                ("regret", "sweep-regret", "router regret")):
        points = analysis.sweep(experiments, key)
        if points:
            blocks.append(charts.lines(plot_id, f"{label} against α (route.strategy = persyn; mean per α)",
                                       {label: [(alpha, mean) for alpha, mean, _ in points]}, "router.alpha", label))
    return [*blocks, Table(["experiment", "α", "strategy", "eval accuracy", "router regret", "generations used"],
                           [[r["name"], str(r["alpha"]), r["strategy"], f4(r["accuracy"]), f4(r["regret"]),
                             "–" if r["used"] is None else str(r["used"])] for r in experiments])]


def strategies(path: Path | None) -> list[Block]:
    """The comparison over draws of bench/strategies.py, when given (persyn report --strategies FILE)."""
    if path is None:
        return ["no strategy comparison given (persyn report --strategies FILE, with FILE as "
                "schemas/strategy_results.schema.json describes: what bench/strategies.py measures)"]
    results = read_strategies(path)
    rows = results["strategies"]
    metric = results["metric"].replace("_", " ")
    reference = results.get("reference", "the reference")
    margin = results.get("design", {}).get("margin")
    intro = (f"{len(rows)} arms on the same {results['prompts']} eval prompts, from {path.name}"
             + (f" ({results['command']})" if "command" in results else "") + f": mean eval {metric} over independent "
             f"draws and prompts with a 95% hierarchical bootstrap interval (draws, then prompts); Δ = arm − {reference} "
             "paired by draw and prompt, p from a paired t-test over draws, Holm-adjusted over the arms"
             + (f"; 'equivalent' when TOST rejects a difference beyond ±{margin:.2f}." if margin is not None else "."))

    def difference(row: dict[str, Any]) -> list[str]:
        d = row.get("difference")
        return ["–"] * 3 if d is None else [f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]",
                                           f"{d.get('holm_p', d['p_value']):.2g}", d.get("verdict", "–")]

    def drawn(plot_id: str, label: str, rows: list[dict[str, Any]]) -> list[Block]:
        return [charts.intervals(plot_id, f"Mean {label} {metric} per arm, with 95% intervals",
                                 [(r["strategy"], r["mean"], r["low"], r["high"]) for r in rows], f"{label} {metric}",
                                 (0, 1) if results["metric"] == "accuracy" else None),
                Table(["arm", "draws", f"{label} {metric} [95% CI]", f"Δ vs {reference} [95% CI]", "Holm p", "verdict",
                       "records (verified)", "generations used"],
                      [[r["strategy"], str(r["draws"]), f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
                        *difference(r), f"{r['records']:.0f} ({r['verified_records']:.0f})" if "records" in r else "–",
                        "–" if r.get("generations_used") is None else str(r["generations_used"])]
                       for r in rows])]

    far = results.get("transfer")
    control = results.get("positive_control")
    if control:
        intro += (f" Positive control, {control['arm']} − {control['against']}: {control['mean']:+.3f} "
                  f"[{control['low']:+.3f}, {control['high']:+.3f}], p {control['p_value']:.2g}: "
                  + ("passed." if control["passed"] else "failed, so no difference here is a verdict on routing."))
    return [intro, *drawn("strategies", "eval", rows),
            *([f"The same students on the {far['prompts']} transfer prompts no arm trains on (harder settings of the "
               f"trained families, and {', '.join(far.get('families', [])) or 'other families'}, left out of training).",
               *drawn("strategies-transfer", "transfer", far["strategies"])] if far else [])]


def cost(build: Build) -> list[Block]:
    """This workspace's last run of each generation stage, from its run log (layout.run_log, not versioned)."""
    found = analysis.answers(build)
    keys = ("prompt_tokens", "completion_tokens", "cost_usd")
    usage = any(a.usage(keys[0]) is not None for a in found.values())
    header = ["teacher", "S answers: generated / reused", "routed: generated / reused", "from S"]
    rows = []
    for t, a in found.items():
        rows.append([t, f"{a.sampled['generated']} / {a.sampled['reused']}",
                     f"{a.routed['generated']} / {a.routed['reused']}", str(a.from_subset)])
        if usage:
            spent = [a.usage(k) or 0 for k in keys]
            rows[-1] += [str(spent[0]), str(spent[1]), f"{spent[2]:.4f}"]
    note = "" if usage else " These run logs predate token and cost accounting (no usage recorded)."
    return [f"Answers per teacher in this workspace's last run of each stage (sample@T on S, then generate@T on its "
            f"routed prompts; from the run logs in {layout.RUNS}/, which are not versioned): generated now, or reused from the "
            f"request cache; routed answers from S are reused as they are.{note}",
            charts.bars("cost-answers", "Answers per teacher: generated now vs reused from the request cache",
                        build.teachers, {"generated now": [float(a.generated) for a in found.values()],
                                         "reused from cache": [float(a.reused) for a in found.values()]},
                        lambda v: f"{v:.0f}"),
            Table(header + (["prompt tokens", "completion tokens", "cost (USD)"] if usage else []), rows)]


SPLITS = (("eval", "eval"), ("eval_shifted", "shifted"))  # split, its label beside a student


def evaluation(build: Build) -> list[Block]:
    result = build.metrics("eval", "evaluate")
    by_split = {"eval": result, "eval_shifted": result.get("eval_shifted")}
    table = Table(["student", "split", "prompts", "accuracy", "mean reward"],
                  [[s, split, str(by_split[split][s]["prompts"]), f4(by_split[split][s].get("accuracy")),
                    f4(by_split[split][s].get("mean_reward"))]
                   for split, _ in SPLITS if by_split[split] for s in ("trained", "untrained")])
    harness = [f"lm-evaluation-harness: {json.dumps(result['lm_eval'], sort_keys=True)}"] if "lm_eval" in result else []
    accuracy = result["trained"].get("accuracy") is not None
    return [*attempt(lambda: evaluation_intervals(build, accuracy, shifted=by_split["eval_shifted"] is not None)), table,
            *harness]


def evaluation_intervals(build: Build, accuracy: bool, shifted: bool) -> list[Block]:
    """Each split's students with bootstrap intervals, and the trained − untrained gain on each: a gain
    on eval that vanishes on the shifted set (phrasings never trained on) was learnt from the template."""
    found = {split: analysis.evaluation(build, split) for split, _ in SPLITS if split == "eval" or shifted}
    metric = "accuracy" if accuracy else "mean reward"

    def gain(result: analysis.Evaluation) -> str:
        g = result.gain
        return (f"{g.difference.estimate:+.4f} [{g.difference.low:+.4f}, {g.difference.high:+.4f}], "
                f"p = {g.p_value:.2g} (sign-flip test over prompts, {g.method})")

    counts = " and ".join(f"{result.prompts} {label}" for (_, label), result in zip(SPLITS, found.values()))
    text = (f"Per-prompt scores of the {counts} prompts (data/eval/{build.student}/predictions.parquet), with 95% "
            f"bootstrap "
            f"intervals over prompts. Trained − untrained: {gain(found['eval'])}.")
    if shifted:
        text += (f" On the shifted eval set (phrasings the built-in generator never writes): "
                 f"{gain(found['eval_shifted'])}; a gain on eval that vanishes there was learnt from the template.")
    return [text, charts.intervals(
        "eval-students", f"Eval {metric}: the student after vs before fine-tuning (95% intervals)",
        [(s if split == "eval" else f"{s} ({label})", i.estimate, i.low, i.high)
         for (split, label), result in zip(SPLITS, found.values())
         for s, i in (("trained", result.trained), ("untrained", result.untrained))],
        f"eval {metric}", (0, 1) if accuracy else None)]


def samples(build: Build) -> list[Block]:
    routed = analysis.routing(build)
    scores = {(r["id"], t): r for t in routed.teachers for r in build.scores[t]}
    rows = []
    for i in sorted(random.Random(0).sample(range(len(routed.ids)), min(SAMPLES, len(routed.ids)))):
        prompt = build.prompts[routed.ids[i]]
        question = next(m["content"] for m in reversed(prompt["messages"]) if m["role"] == "user")
        rows.append([f"{question}\nreference: {prompt['reference']}"])
        for k, t in enumerate(routed.teachers):
            answer, score = build.samples[t][prompt["id"]]["response"], scores[(prompt["id"], t)]
            marks = [m for m, on in (("router's choice", k == routed.chosen[i]),
                                     ("in the dataset", build.dataset_teachers.get(prompt["id"]) == t),
                                     ("best by r", np.isclose(routed.reward[i, k], routed.reward[i].max()))) if on]
            rows[-1].append(answer[:ANSWER_CHARS] + (" …" if len(answer) > ANSWER_CHARS else "")
                            + f"\n— quality {score['quality']:.4g} · learnability {score['learnability']:.4f}"
                            + (f"\n◆ {', '.join(marks)}" if marks else ""))
    return [f"{len(rows)} router-subset prompts (seeded), every teacher's answer side by side.",
            Table(["prompt", *routed.teachers], rows)]


def sections(build: Build, experiments: list[dict[str, Any]], results: Path | None) -> list[Part]:
    return [("summary", "1. Build summary", summary(build)),
            ("teacher-shares", "2. Teacher shares", attempt(lambda: shares(build))),
            ("rewards", "3. Reward distributions per teacher", attempt(lambda: rewards(build))),
            ("router", "4. Router: regret and calibration", attempt(lambda: router_section(build))),
            ("alpha-sweep", "5. α sweep across experiments", sweep(experiments)),
            ("strategies", "6. Strategy comparison", strategies(results)),
            ("cost", "7. Cost", attempt(lambda: cost(build))),
            ("eval", "8. Eval accuracy", attempt(lambda: evaluation(build))),
            ("samples", "9. Sample records per teacher", attempt(lambda: samples(build)))]
