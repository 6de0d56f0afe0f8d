"""A scratch clone of this repository's HEAD for benchmarks: its own persyn, an empty request cache,
and the converted models shared (the one-time conversion is not what a benchmark measures)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from persyn.core.models import cache_root

ROOT = Path(__file__).resolve().parents[1]


def scratch_project(prefix: str, share_requests: bool = False) -> tuple[Path, Path, dict[str, str]]:
    """(scratch directory, project clone, environment for running dvc in it); with `share_requests`
    the machine's whole request cache is used (answers generated before are not generated again)."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    project = scratch / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    cache = cache_root() if share_requests else scratch / "cache"
    if not share_requests:
        cache.mkdir()
        shared = cache_root() / "models"
        shared.mkdir(parents=True, exist_ok=True)  # a new machine has none yet: a dangling link fails the first conversion
        (cache / "models").symlink_to(shared)
    env = {**os.environ, "PERSYN_CACHE_DIR": str(cache), "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(project)}  # the clone's persyn, not whatever is installed
    return scratch, project, env


def existing_project(scratch: Path) -> tuple[Path, Path, dict[str, str]]:
    """scratch_project's triple for a scratch directory made earlier: its own request cache where it
    has one, else the machine's (it was made with share_requests)."""
    project = scratch / "project"
    if not (project / "dvc.yaml").is_file():
        raise SystemExit(f"{scratch}: not a benchmark scratch directory (no project/dvc.yaml)")
    cache = scratch / "cache" if (scratch / "cache").is_dir() else cache_root()
    env = {**os.environ, "PERSYN_CACHE_DIR": str(cache), "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(project)}
    return scratch, project, env
