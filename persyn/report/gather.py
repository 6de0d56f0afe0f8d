"""What the report reads: one student's artifacts of a build under a folder, each read (and
schema-checked) once.

The folder is the workspace itself, or what persyn.project.revisions copied out of a git revision or DVC
experiment (the files FETCHED names). A missing input raises NotBuilt with the stage that makes it,
so that its section can say what to run instead of failing.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from persyn.core import layout
from persyn.params import config
from persyn.pipeline import lm_router, router
from persyn.core.io import read_embeddings, read_json, read_parquet
from persyn.report.render import MISSING
from persyn.science.comparison import check_strategies

FETCHED = ("params.toml", f"{layout.METRICS}/*.json", f"{layout.METRICS}/*/*.json", layout.PROMPTS, layout.EMBEDDINGS,
           layout.scores("*", "*"), layout.sample("*"), layout.generated("*", "*"), f"{layout.router('*')}/*",
           f"{layout.dataset('*')}/*", layout.predictions("*"))


class NotBuilt(Exception):
    """An input of a section is missing; its arguments: the stage that makes it, and the input's path."""

    def line(self) -> str:
        """What the section says instead: the file that is not here (a section can hold tables from other
        inputs, so never "not built") and how to get it."""
        stage, path = self.args
        return f"{MISSING}: {path} is not in this workspace (run dvc repro {stage}, or dvc pull)"


class Build:
    """One student's artifacts of the build under `root` (persyn/core/layout.py names them)."""

    def __init__(self, root: Path, student: str) -> None:
        self.root, self.student = root, student
        self.params = config.load(root / "params.toml", models_here=False).for_student(student)
        self.teachers = sorted(self.params.teachers)

    def path(self, relative: str, stage: str) -> Path:
        if not (self.root / relative).exists():
            raise NotBuilt(stage, relative)
        return self.root / relative

    def json(self, relative: str, stage: str) -> dict[str, Any]:
        """Metrics and stats unvalidated, so that builds from before the `usage` blocks still read."""
        return read_json(self.path(relative, stage))

    def metrics(self, name: layout.Metric, stage: str) -> dict[str, Any]:
        return self.json(layout.metrics(self.student, name), stage)

    @cached_property
    def scores(self) -> dict[str, list[dict[str, Any]]]:
        return {t: read_parquet(self.path(layout.scores(self.student, t), "score"), "score") for t in self.teachers}

    @cached_property
    def samples(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Teacher → prompt id → its answer on the router subset S."""
        return {t: {r["id"]: r for r in read_parquet(self.path(layout.sample(t), "sample"), "generation")}
                for t in self.teachers}

    @cached_property
    def generated(self) -> dict[str, list[dict[str, Any]]]:
        """Teacher → its answers on the prompts this student routed to it."""
        return {t: read_parquet(self.path(layout.generated(self.student, t), "generate"), "generation")
                for t in self.teachers}

    @cached_property
    def prompts(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in read_parquet(self.path(layout.PROMPTS, "prompts"), "prompt")}

    @cached_property
    def embeddings(self) -> dict[str, np.ndarray]:
        return read_embeddings(self.path(layout.EMBEDDINGS, "embed"))

    @cached_property
    def router(self) -> router.Trained:
        """The routing router, a head over embeddings or an lm router (persyn.pipeline.lm_router.load reads both)."""
        return lm_router.load(self.path(layout.router(self.student), "fit_router"))[0]

    @cached_property
    def dataset_teachers(self) -> dict[str, str]:
        """Prompt id → the teacher whose answer the dataset holds; empty before assemble."""
        shards = sorted((self.root / layout.dataset(self.student)).glob("train-*.parquet"))
        return {r["id"]: r["teacher"] for shard in shards for r in read_parquet(shard, "dataset_record")}

    @cached_property
    def predictions(self) -> list[dict[str, Any]]:
        """Per eval prompt, the trained and the untrained student's scores, in prompt-id order."""
        rows = read_parquet(self.path(layout.predictions(self.student), "evaluate"), "prediction")
        return sorted(rows, key=lambda r: r["id"])

    def run_log(self, stage: str, teacher: str) -> dict[str, Any]:
        """This workspace's last run of sample@T (shared by the students) or of this student's
        generate@<student>-T (layout.run_log: not versioned)."""
        name = f"{stage}@{teacher}" if stage == "sample" else f"{stage}@{self.student}-{teacher}"
        return self.json(layout.run_log(name), stage)


def read_strategies(path: Path) -> dict[str, Any]:
    """A strategy comparison (schemas/strategy_results.schema.json), each interval checked to hold
    its mean."""
    results = read_json(path, "strategy_results")
    check_strategies(results, path)
    return results
