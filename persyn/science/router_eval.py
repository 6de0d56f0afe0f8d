"""Held-out router comparison on verified correctness, from a build's scored router subset S.

S is cut into k seeded folds, `repeats` times over; each method learns from k-1 folds and picks one
teacher for every prompt of the held-out fold, so every prompt gets one out-of-sample choice per
repeat. Methods: the LM router (router.head = "lm") and the linear head, each under the pair rules
asked for (router.pairs "all" is the paper's, "verified" the beyond-paper option), the best single
teacher (highest mean quality on the training folds) and the family oracle (per family, the teacher
with the highest mean quality on the training folds, knowing each prompt's family).

Per method: accuracy (quality of the chosen answer: 1 = verified right), regret against the best
answer available on the prompt, top-1 (the chosen answer is as good as the best), the same two on the
proxy (the combined reward r the router is trained on), and the accuracy difference from the best
single teacher. Intervals: persyn.core.stats' two-level bootstrap over prompts and repeats (a single
repeat: over prompts), and an exact sign-flip p for the difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from persyn.core import io, layout, stats
from persyn.pipeline import lm_router, router
from persyn.science import premise
from persyn.params.config import RouterConfig
from persyn.core.errors import PersynError


@dataclass(frozen=True)
class S:
    """The scored router subset, one row per prompt answered by every teacher."""

    ids: list[str]
    families: list[str]
    texts: np.ndarray  # object array of prompt texts (what the LM router reads)
    embeddings: np.ndarray  # what the linear head reads
    quality: np.ndarray  # prompts × teachers, 1 = verified right
    learn: np.ndarray  # prompts × teachers, the student's learnability


def from_build(root: Path, student: str, teachers: list[str]) -> S:
    """S as a build left it: data/prompts.parquet (texts, families), data/scores/<student>/, data/embeddings.parquet."""
    prompts = io.read_parquet(root / layout.PROMPTS, "prompt")
    scores = [r for t in teachers for r in io.read_parquet(root / layout.scores(student, t), "score")]
    ids, families, quality, learn = premise.matrices(prompts, scores, teachers, layout.scores_dir(student))
    embeddings = io.read_embeddings(root / layout.EMBEDDINGS)
    missing = [i for i in ids if i not in embeddings]
    if missing:
        raise PersynError(f"{layout.EMBEDDINGS}: no embedding for prompt {missing[0]} (re-run embed)")
    text = {p["id"]: lm_router.prompt_text(p) for p in prompts}
    return S(ids, families, np.array([text[i] for i in ids], dtype=object), np.stack([embeddings[i] for i in ids]),
             quality, learn)


def folds(count: int, k: int, seed: int) -> list[np.ndarray]:
    """k seeded, disjoint, near-equal held-out folds covering every row."""
    return [np.sort(part) for part in np.array_split(np.random.default_rng(seed).permutation(count), k)]


def best_teacher(quality: np.ndarray) -> int:
    """The teacher with the highest mean quality (ties: the first in order)."""
    return int(quality.mean(axis=0).argmax())


def family_choice(data: S, train: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Per held-out prompt, its family's best teacher on the training rows (unseen family: the best single)."""
    fallback = best_teacher(data.quality[train])
    family = np.array(data.families)
    best = {f: best_teacher(data.quality[train][family[train] == f]) for f in set(family[train])}
    return np.array([best.get(f, fallback) for f in family[held]])


def router_choice(data: S, teachers: list[str], train: np.ndarray, held: np.ndarray, config: RouterConfig) -> np.ndarray:
    """Fit router.train on the training rows' pairs, then its argmax on the held-out rows."""
    reward = router.combined_reward(data.quality, data.learn, config.alpha, config.normalisation)
    pairs = router.training_pairs(reward[train], data.quality[train], config)
    x, trainer = (data.texts, lm_router.train) if config.head == "lm" else (data.embeddings, router.train)
    return trainer(x[train], pairs, teachers, config).route(x[held])


def methods(config: RouterConfig, rules: list[str], lm: bool) -> dict[str, RouterConfig | str]:
    """Method name → the router config it fits, or "best_single" / "family_oracle"."""
    found: dict[str, RouterConfig | str] = {}
    for head in (["lm"] if lm else []) + ["linear"]:
        for rule in rules:
            found[f"{head} router ({rule} pairs)" if head == "lm" else f"linear head ({rule} pairs)"] = \
                replace(config, head=head, pairs=rule)
    return {**found, "best single teacher": "best_single", "family oracle": "family_oracle"}


def compare(data: S, teachers: list[str], config: RouterConfig, rules: list[str], k: int = 4, repeats: int = 1,
            seed: int = 0, lm: bool = True) -> dict[str, Any]:
    """Every method's out-of-sample choice on every prompt of S, per repeat, and its scores with intervals."""
    fitted = methods(config, rules, lm)
    chosen = {name: np.zeros((repeats, len(data.ids)), dtype=np.int64) for name in fitted}
    seconds = {name: 0.0 for name in chosen}
    for repeat in range(repeats):
        for held in folds(len(data.ids), k, seed + repeat):
            train = np.setdiff1d(np.arange(len(data.ids)), held)
            for name, how in fitted.items():
                start = time.perf_counter()
                if how == "best_single":
                    chosen[name][repeat, held] = best_teacher(data.quality[train])
                elif how == "family_oracle":
                    chosen[name][repeat, held] = family_choice(data, train, held)
                else:
                    chosen[name][repeat, held] = router_choice(data, teachers, train, held, how)
                seconds[name] += time.perf_counter() - start
    reward = router.combined_reward(data.quality, data.learn, config.alpha, config.normalisation)
    baseline = chosen["best single teacher"]
    return {
        "prompts": len(data.ids), "teachers": teachers, "folds": k, "repeats": repeats, "seed": seed,
        "families": {f: data.families.count(f) for f in sorted(set(data.families))},
        "oracle_accuracy": float(data.quality.max(axis=1).mean()),
        "methods": {name: {**scores(picks, data.quality, reward, baseline), "seconds": round(seconds[name], 2),
                           "shares": {t: float((picks == i).mean()) for i, t in enumerate(teachers)}}
                    for name, picks in chosen.items()},
    }


def scores(picks: np.ndarray, quality: np.ndarray, reward: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """Accuracy, regret and top-1 on quality and on the proxy r, with intervals; the accuracy
    difference from the best single teacher's picks (`baseline`), paired by prompt and repeat."""
    def got(values: np.ndarray, which: np.ndarray) -> np.ndarray:
        """values[prompt, teacher picked there], as a (repeats × prompts) matrix."""
        return values[np.arange(values.shape[0])[None, :], which]

    def ci(matrix: np.ndarray) -> dict[str, float]:
        found = stats.mean_ci(matrix)
        return {"mean": found.estimate, "low": found.low, "high": found.high}

    accuracy, proxy = got(quality, picks), got(reward, picks)
    best_quality, best_reward = quality.max(axis=1), reward.max(axis=1)
    difference = stats.paired(accuracy, got(quality, baseline))
    return {
        "accuracy": ci(accuracy),
        "regret": ci(best_quality - accuracy),
        "top1": ci(np.isclose(accuracy, best_quality).astype(float)),
        "proxy_regret": ci(best_reward - proxy),
        "proxy_top1": ci(np.isclose(proxy, best_reward).astype(float)),
        "vs_best_single": {"mean": difference.difference.estimate, "low": difference.difference.low,
                           "high": difference.difference.high, "p": difference.p_value},
    }


def markdown(result: dict[str, Any]) -> str:
    """One row per method: each number with its 95% interval."""
    def cell(value: dict[str, float]) -> str:
        return f"{value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"

    lines = [f"Held-out S: {result['prompts']} prompts, {result['folds']} folds × {result['repeats']} repeat(s) "
             f"(seed {result['seed']}); correctness oracle accuracy {result['oracle_accuracy']:.3f}.", "",
             "| method | accuracy | regret | top-1 | proxy regret | proxy top-1 | accuracy − best single (p) | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in result["methods"].items():
        delta = row["vs_best_single"]
        lines.append(f"| {name} | {cell(row['accuracy'])} | {cell(row['regret'])} | {cell(row['top1'])} | "
                     f"{cell(row['proxy_regret'])} | {cell(row['proxy_top1'])} | "
                     f"{delta['mean']:+.3f} [{delta['low']:+.3f}, {delta['high']:+.3f}] (p = {delta['p']:.2f}) | "
                     f"{row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
