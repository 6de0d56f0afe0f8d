"""The committed dvc.lock is the build of the code, schemas and params in this tree: no stage's code,
schema, params or model-pin dependency differs from the hash the lock holds (missing outputs and the
data one stage hands the next are left aside: a clone has none). Fails until `dvc repro` is run and
dvc.lock committed after such a change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ("data/", "metrics/", "plots/")  # outputs of other stages, absent from a fresh clone


def stale_dependencies() -> dict[str, list[str]]:
    """Stage → its changed dependencies that are inputs of the build, as `dvc status` reports them."""
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    stale: dict[str, list[str]] = {}
    for stage, changes in json.loads(result.stdout or "{}").items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            stale[stage] = stale.get(stage, []) + [
                f"{path} ({state if isinstance(state, str) else ', '.join(state)})"
                for path, state in deps.items() if not path.startswith(ARTIFACTS)]
    return {stage: deps for stage, deps in stale.items() if deps}


def test_the_committed_lock_matches_the_code_schemas_and_params() -> None:
    stale = stale_dependencies()
    assert not stale, ("dvc.lock was not built from this tree (run dvc repro and commit dvc.lock): "
                       + "; ".join(f"{stage}: {', '.join(deps)}" for stage, deps in sorted(stale.items())))
