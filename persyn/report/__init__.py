"""`persyn report`: one self-contained HTML page and its markdown twin for a build, a git revision or
a DVC experiment.

gather reads a student's artifacts of a build, analysis computes from them, sections says what the
page shows (students, for several students, side by side first), render and charts draw it; git and
DVC are reached through persyn.project.revisions alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from persyn.params import config
from persyn.project import revisions
from persyn.core.io import atomic_path
from persyn.report import render, sections, students
from persyn.report.gather import FETCHED, Build


def write(root: Path, out: Path, subtitle: str, experiments: dict[str, list[dict[str, Any]]],
          strategies: Path | None = None) -> Path:
    """Render the build under `root` into out/index.html and out/report.md (atomically); `experiments`
    are each student's rows of revisions.experiments."""
    builds = [Build(root, s) for s in sorted(config.load(root / "params.toml", models_here=False).students)]
    title = f"persyn report: {builds[0].params.assemble.name}"
    if len(builds) == 1:
        parts = sections.sections(builds[0], experiments.get(builds[0].student, []), strategies)
    else:
        parts = [("students", "Students side by side", students.comparison(root, builds))]
        for build in builds:
            own = sections.sections(build, experiments.get(build.student, []), strategies)
            parts += students.namespaced(build.student, [p for p in own if p[0] != "strategies"])
        parts += [p for p in own if p[0] == "strategies"]
    for name, text in (("index.html", render.html_page(title, subtitle, parts)),
                       ("report.md", render.markdown(title, subtitle, parts))):
        with atomic_path(out / name) as scratch:
            scratch.write_text(text, encoding="utf-8")
    return out / "index.html"


def report(repo: Path, rev: str | None, out: Path, strategies: Path | None = None) -> Path:
    """The report of the workspace (rev None) or of a git revision / DVC experiment, into `out`;
    `strategies` is a strategy comparison (schemas/strategy_results.schema.json) to show beside it."""
    if rev is None:
        return write(repo, out, f"workspace (git HEAD {revisions.commit_of(repo)})", experiments(repo, repo), strategies)
    with tempfile.TemporaryDirectory(prefix="persyn-report-") as folder:
        commit = revisions.copy_revision(repo, rev, FETCHED, Path(folder))
        return write(Path(folder), out, f"{rev} (git commit {commit})", experiments(repo, Path(folder)), strategies)


def experiments(repo: Path, root: Path) -> dict[str, list[dict[str, Any]]]:
    """The repository's experiments, as each student of the build under `root` saw them."""
    return {s: revisions.experiments(repo, s) for s in config.load(root / "params.toml", models_here=False).students}
