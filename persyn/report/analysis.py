"""What the report computes from a build's artifacts: the router's view of S, its calibration, the
α sweep's means, answer counts, and eval accuracy with bootstrap intervals (persyn.core.stats).

Numbers only: what they are called and how they are drawn is persyn.report.sections' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from persyn.core import layout, stats
from persyn.pipeline import lm_router, router
from persyn.report.gather import Build

CALIBRATION_BINS = 5


@dataclass
class Choices:
    """One router's choice on every prompt of S and its confidence (softmax of its coefficients there)."""

    chosen: np.ndarray  # per prompt, the index of the teacher the router picks
    confidence: np.ndarray  # softmax of the router's coefficients at its choice


def choices(trained: router.Trained, x: np.ndarray | list[str]) -> Choices:
    coefficients = trained.coefficients(x).astype(np.float64)
    probabilities = np.exp(coefficients - coefficients.max(axis=1, keepdims=True))
    chosen = coefficients.argmax(axis=1)
    return Choices(chosen, (probabilities / probabilities.sum(axis=1, keepdims=True))[np.arange(len(x)), chosen])


@dataclass
class Routing:
    """The router's view of the router subset S: combined rewards, its choices, their confidence."""

    teachers: list[str]
    ids: list[str]
    reward: np.ndarray  # prompts × teachers, combined r
    chosen: np.ndarray  # the routing router's choices (refitted on all of S under router.refit_on_all)
    confidence: np.ndarray
    fit_on: str  # what the routing router was fit on: "all" of S or its "training" part
    held_out: Choices  # the fit the router metrics measured, on every prompt of S
    validation: list[int] | None  # rows of the held-out ids saved with the router; None if they disagree with it

    def best(self, chosen: np.ndarray) -> np.ndarray:
        """Per prompt, whether the chosen teacher has the highest combined reward (ties count)."""
        return np.isclose(self.reward[np.arange(len(self.ids)), chosen], self.reward.max(axis=1))


def routing(build: Build) -> Routing:
    trained = build.router
    held, meta = lm_router.load(build.path(layout.router(build.student), "fit_router"), "held_out")
    scores = [r for t in trained.teachers for r in build.scores[t]]
    ids, quality, learn = router.reward_matrices(scores, trained.teachers, layout.scores_dir(build.student))
    # the α the router was fitted with (saved beside it), not whatever params.toml says now
    reward = router.combined_reward(quality, learn, meta["alpha"], build.params.router.normalisation)
    x = ([lm_router.prompt_text(build.prompts[i]) for i in ids] if meta["head"] == "lm"
         else np.stack([build.embeddings[i] for i in ids]))
    routed, measured = choices(trained, x), choices(held, x)
    return Routing(trained.teachers, ids, reward, routed.chosen, routed.confidence, meta["fit_on"], measured,
                   held_out(build, ids, reward, measured, meta["held_out_ids"]))


def held_out(build: Build, ids: list[str], reward: np.ndarray, measured: Choices, saved: list[str]) -> list[int] | None:
    """Rows of the held-out ids saved with the router; kept only if the held-out fit's regret on them
    equals the one in the router metrics, so the label never claims what it is not."""
    metrics = build.metrics("router", "fit_router")
    row = {prompt: i for i, prompt in enumerate(ids)}
    validation = sorted(row[i] for i in saved if i in row)
    regret = (reward.max(axis=1) - reward[np.arange(len(reward)), measured.chosen])[validation]
    if (metrics["evaluated_on"] == "validation" and len(validation) == len(saved) == metrics["prompts"]
            and np.isclose(regret.mean(), metrics["router"]["regret"])):
        return validation
    return None


@dataclass
class Bin:
    """One confidence bin of one group of prompts."""

    group: str
    low: float
    high: float
    count: int
    confidence: float  # mean confidence inside the bin
    best: float  # share of its prompts whose chosen teacher was the best by r


def calibration(routed: Routing) -> list[Bin]:
    """Confidence of the router's choice against how often it was the best teacher by r, in equal-width
    bins from 1/N to 1: the held-out fit on the held-out prompts (out of sample), and apart the routing
    router on what it was fit on (all of S, or the training prompts); all of S as one group by the
    routing router when the saved held-out ids do not reproduce the router metrics."""
    held, everything = routed.validation, list(range(len(routed.ids)))
    by_router = (routed.chosen, routed.confidence)
    if held is None:
        groups = {"all router-subset prompts (routing router)": (everything, *by_router)}
    else:
        rest = everything if routed.fit_on == "all" else [i for i in everything if i not in held]
        groups = {f"validation (n={len(held)})": (held, routed.held_out.chosen, routed.held_out.confidence),
                  f"{'all of S' if routed.fit_on == 'all' else 'training'} (n={len(rest)})": (rest, *by_router)}
    edges = np.linspace(1 / len(routed.teachers), 1, CALIBRATION_BINS + 1)
    found = []
    for name, (members, chosen, confidences) in groups.items():
        confidence, best = confidences[members], routed.best(chosen)[members]
        bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, len(edges) - 2)
        for b in sorted(set(bins.tolist())):
            inside = bins == b
            found.append(Bin(name, float(edges[b]), float(edges[b + 1]), int(inside.sum()),
                             float(confidence[inside].mean()), float(best[inside].mean())))
    return found


def sweep(experiments: list[dict[str, Any]], key: str) -> list[tuple[float, float, list[str]]]:
    """(α, mean of `key`, experiment names) per α of the persyn-strategy experiments, α ascending;
    an α with any experiment lacking `key` is left out."""
    by_alpha: dict[float, list[dict[str, Any]]] = {}
    for row in experiments:
        if row["strategy"] == "persyn" and row["alpha"] is not None:
            by_alpha.setdefault(row["alpha"], []).append(row)
    return [(alpha, float(np.mean([r[key] for r in rows])), [r["name"] for r in rows])
            for alpha, rows in sorted(by_alpha.items()) if all(r[key] is not None for r in rows)]


@dataclass
class Answers:
    """One teacher's answers in the last run of sample@T and generate@T."""

    sampled: dict[str, Any]  # sample@T's run log
    routed: dict[str, Any]  # generate@T's run log
    from_subset: int  # routed prompts whose answer was S's (generate@T read it from sample@T's answers)

    @property
    def generated(self) -> int:
        return self.sampled["generated"] + self.routed["generated"]

    @property
    def reused(self) -> int:
        return self.sampled["reused"] + self.routed["reused"]

    def usage(self, key: str) -> float | None:
        """Total `key` (prompt_tokens, completion_tokens, cost_usd) of both runs; None if unrecorded."""
        spent = [log["usage"][key] for log in (self.sampled, self.routed) if "usage" in log]
        return sum(spent) if spent else None


def answers(build: Build) -> dict[str, Answers]:
    return {t: Answers(build.run_log("sample", t), build.run_log("generate", t),
                       sum(a["id"] in build.samples[t] for a in build.generated[t]))
            for t in build.teachers}


@dataclass
class Evaluation:
    """Mean eval score of each student with its 95% bootstrap interval over prompts, and the paired
    trained − untrained difference with its sign-flip p-value."""

    prompts: int
    trained: stats.Interval
    untrained: stats.Interval
    gain: stats.Paired


def evaluation(build: Build, split: str = "eval") -> Evaluation:
    """The students on one eval split (eval, or eval_shifted: the shifted eval set)."""
    rows = [r for r in build.predictions if r["split"] == split]
    trained = [r["trained_score"] for r in rows]
    untrained = [r["untrained_score"] for r in rows]
    return Evaluation(len(rows), stats.mean_ci(trained), stats.mean_ci(untrained), stats.paired(trained, untrained))
