"""`persyn report`: one self-contained HTML page and its markdown twin for a build, a git revision or
a DVC experiment.

gather reads a build's artifacts, analysis computes from them, sections says what the page shows,
render and charts draw it; git and DVC are reached through persyn.revisions alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from persyn import revisions
from persyn.io import atomic_path
from persyn.report import render, sections
from persyn.report.gather import FETCHED, Build


def write(root: Path, out: Path, subtitle: str, experiments: list[dict[str, Any]],
          strategies: Path | None = None) -> Path:
    """Render the build under `root` into out/index.html and out/report.md (atomically)."""
    build = Build(root)
    title = f"persyn report: {build.params.assemble.name}"
    parts = sections.sections(build, experiments, strategies)
    for name, text in (("index.html", render.html_page(title, subtitle, parts)),
                       ("report.md", render.markdown(title, subtitle, parts))):
        with atomic_path(out / name) as scratch:
            scratch.write_text(text, encoding="utf-8")
    return out / "index.html"


def report(repo: Path, rev: str | None, out: Path, strategies: Path | None = None) -> Path:
    """The report of the workspace (rev None) or of a git revision / DVC experiment, into `out`;
    `strategies` is a strategy comparison (schemas/strategy_results.schema.json) to show beside it."""
    found = revisions.experiments(repo)
    if rev is None:
        return write(repo, out, f"workspace (git HEAD {revisions.commit_of(repo)})", found, strategies)
    with tempfile.TemporaryDirectory(prefix="persyn-report-") as folder:
        commit = revisions.copy_revision(repo, rev, FETCHED, Path(folder))
        return write(Path(folder), out, f"{rev} (git commit {commit})", found, strategies)
