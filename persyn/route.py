"""Route then Generate: which teacher answers which prompt, for PerSyn and every paper baseline.

  persyn           argmax of the router's coefficients per prompt
  strongest        the single teacher with the best mean quality on the router subset (Strong)
  fixed:<teacher>  one named teacher for every prompt (e.g. Family-Strong)
  random           a seeded uniform choice per prompt
  mix              seeded: the strongest teacher with probability mix_ratio, else the weakest (Mix)
  car              one teacher by mean quality / (1 + beta * student loss) on the subset (CAR)
  oracle           every teacher answers every prompt; assemble keeps the best by r (Generate-then-Select)

Route files hold only ids (sorted), so a teacher whose set of prompts did not change keeps a
byte-identical file and DVC skips its generate stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from persyn.config import RouteConfig
from persyn.errors import PersynError
from persyn.router import Router

ROUTED_SPLITS = ("router", "pool")


def subset_means(scores: list[dict[str, Any]], teachers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw quality and mean learnability per teacher over the router subset."""
    quality = np.array([np.mean([s["quality"] for s in scores if s["teacher"] == t]) for t in teachers])
    learn = np.array([np.mean([s["learnability"] for s in scores if s["teacher"] == t]) for t in teachers])
    return quality, learn


def choose(config: RouteConfig, ids: list[str], router: Router, embeddings: np.ndarray,
           scores: list[dict[str, Any]]) -> list[list[int]]:
    """For each prompt, the indices (into router.teachers) of the teachers that answer it."""
    teachers = router.teachers
    quality, learn = subset_means(scores, teachers)
    strategy = config.strategy
    if strategy == "persyn":
        return [[int(i)] for i in router.route(embeddings)] if ids else []
    if strategy == "oracle":
        return [list(range(len(teachers))) for _ in ids]
    if strategy == "random":
        return [[int(i)] for i in np.random.default_rng(config.seed).integers(0, len(teachers), len(ids))]
    if strategy == "mix":
        strong, weak = int(quality.argmax()), int(quality.argmin())
        draws = np.random.default_rng(config.seed).random(len(ids))
        return [[strong if draw < config.mix_ratio else weak] for draw in draws]
    if strategy == "strongest":
        single = int(quality.argmax())
    elif strategy == "car":
        single = int((quality / (1 + config.car_beta * -learn)).argmax())
    else:
        name = strategy.removeprefix("fixed:")
        if name not in teachers:
            raise PersynError(f"params.toml: route.strategy: unknown teacher '{name}' (configured: {', '.join(teachers)})")
        single = teachers.index(name)
    return [[single] for _ in ids]


def assign(config: RouteConfig, prompts: list[dict[str, Any]], router: Router,
           embeddings: dict[str, np.ndarray], scores: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Teacher → sorted prompt ids, over the router and pool splits."""
    routed = sorted(p["id"] for p in prompts if p["split"] in ROUTED_SPLITS)
    missing = [i for i in routed if i not in embeddings]
    if missing:
        raise PersynError(f"data/embeddings.parquet: no embedding for prompt {missing[0]} (re-run embed)")
    vectors = np.stack([embeddings[i] for i in routed]) if routed else np.zeros((0, 1), dtype=np.float32)
    assignment: dict[str, list[str]] = {t: [] for t in router.teachers}
    for prompt_id, chosen in zip(routed, choose(config, routed, router, vectors, scores)):
        for index in chosen:
            assignment[router.teachers[index]].append(prompt_id)
    return assignment
