"""Route then Generate: each prompt goes to exactly one teacher.

Route files hold only ids (sorted), so a teacher whose set of prompts did not change keeps a
byte-identical file and DVC skips its generate stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from persyn.errors import PersynError
from persyn.router import Router

ROUTED_SPLITS = ("router", "pool")


def assign(strategy: str, prompts: list[dict[str, Any]], router: Router,
           embeddings: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Teacher → sorted prompt ids, over the router and pool splits."""
    routed = sorted(p["id"] for p in prompts if p["split"] in ROUTED_SPLITS)
    missing = [i for i in routed if i not in embeddings]
    if missing:
        raise PersynError(f"data/embeddings.parquet: no embedding for prompt {missing[0]} (re-run embed)")
    if strategy != "persyn":
        raise PersynError(f"params.toml: route.strategy: unknown strategy '{strategy}'")
    choice = router.route(np.stack([embeddings[i] for i in routed])) if routed else np.array([], dtype=int)
    assignment: dict[str, list[str]] = {t: [] for t in router.teachers}
    for prompt_id, index in zip(routed, choice):
        assignment[router.teachers[int(index)]].append(prompt_id)
    return assignment
