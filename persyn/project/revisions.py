"""Where persyn meets git and DVC: revisions, DVC experiments and what was built at either.

The pipeline library (config … dataset) knows nothing of DVC. `persyn release`, `persyn diff` and
`persyn report` read the repository through this module alone: git and `dvc` on the command line
(`dvc` as `python -m dvc` under the interpreter that runs persyn, so an unactivated venv works), and
DVC's own view of a revision (dvc.api.DVCFileSystem), which also serves outputs that only the DVC
cache holds.
"""

from __future__ import annotations

import importlib.util
import io as bytes_io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from persyn.core import layout
from persyn.params.config import tomllib
from persyn.core.errors import PersynError

METRICS: tuple[layout.Metric, ...] = ("router", "dataset", "train", "eval")  # what release and diff read


def run(command: list[str], cwd: Path) -> str:
    """A git or dvc command's stdout; its failure is one PersynError with what it printed. `dvc` runs
    through this interpreter (`python -m dvc`), not from PATH, where another DVC or none may be."""
    result = subprocess.run(program(command), cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PersynError(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()[:400]}")
    return result.stdout


def program(command: list[str]) -> list[str]:
    """The argv that runs `command`: dvc as this interpreter's module; a missing tool is one PersynError."""
    if command[0] == "dvc":
        if importlib.util.find_spec("dvc") is None:
            raise PersynError(f"DVC is not installed for {sys.executable}: pip install dvc (or the project's venv)")
        return [sys.executable, "-m", "dvc", *command[1:]]
    if command[0] == "git" and shutil.which("git") is None:
        raise PersynError("git is not installed (or not on PATH): persyn release, diff and report need it")
    return command


def commit_of(repo: Path, rev: str = "HEAD") -> str:
    return run(["git", "rev-parse", rev], repo).strip()


def resolve_revision(repo: Path, rev: str) -> str:
    """A git revision, or the name of a DVC experiment."""
    if subprocess.run(program(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"]), cwd=repo,
                      capture_output=True).returncode == 0:
        return rev
    refs = run(["git", "for-each-ref", "refs/exps", "--format=%(refname)"], repo).split()
    matches = [ref for ref in refs if ref.rsplit("/", 1)[-1] == rev]
    if not matches:
        raise PersynError(f"'{rev}' is neither a git revision nor a DVC experiment")
    return matches[0]


def read_revision(repo: Path, rev: str, student: str) -> dict[str, Any]:
    """params, one student's metrics and dataset records as they were at a revision."""
    from dvc.api import DVCFileSystem
    from dvc_data.index import DataIndexError

    fs = DVCFileSystem(str(repo), rev=resolve_revision(repo, rev))
    params = tomllib.loads(fs.read_text("params.toml"))
    metrics = {m: json.loads(fs.read_text(layout.metrics(student, m)))
               for m in METRICS if fs.exists(layout.metrics(student, m))}
    try:
        shards = sorted(p for p in fs.ls(layout.dataset(student), detail=False)
                        if p.rsplit("/", 1)[-1].startswith("train-"))
        records = [r for shard in shards for r in pl.read_parquet(bytes_io.BytesIO(fs.read_bytes(shard))).to_dicts()]
    except (FileNotFoundError, DataIndexError):
        raise not_cached(rev, layout.dataset(student)) from None
    return {"params": params, "metrics": metrics, "records": records}


def copy_revision(repo: Path, rev: str, patterns: Iterable[str], target: Path) -> str:
    """Copy the files matching `patterns` (globs), as they were at a git revision or DVC experiment,
    into `target`; the revision's commit."""
    from dvc.api import DVCFileSystem
    from dvc_data.index import DataIndexError

    resolved = resolve_revision(repo, rev)
    fs = DVCFileSystem(str(repo), rev=resolved)
    for pattern in patterns:
        try:
            for path in sorted(p for p in fs.glob(pattern) if fs.isfile(p)):
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, str(target / path))
        except (FileNotFoundError, DataIndexError):
            raise not_cached(rev, pattern) from None
    return commit_of(repo, resolved)


def not_cached(rev: str, path: str) -> PersynError:
    """A revision's output that neither the workspace nor the local DVC cache holds (a fresh clone, no remote)."""
    return PersynError(f"{rev}: {path} is not in the local DVC cache: `dvc pull` it if a remote has it, "
                       "else build that revision (`dvc repro` there)")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys: {"a": {"b": 1}} → {"a.b": 1}."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def shown_values(entry: dict[str, Any]) -> dict[str, Any]:
    """One `dvc exp show --json` revision's params and metrics, flattened to
    keys: "params.toml.router.alpha", or a metrics file's path, a dot and the key inside it."""
    data = entry.get("data") or {}
    return flatten({path: value.get("data", {}) for group in ("params", "metrics")
                    for path, value in (data.get(group) or {}).items()})


def experiments(repo: Path, student: str) -> list[dict[str, Any]]:
    """α, strategy and one student's headline metrics of each baseline commit that has DVC experiments,
    then of its experiments (`dvc exp show`); empty when there are no experiments."""
    rows = []
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], repo) or "[]"):
        runs = sorted((r for exp in baseline.get("experiments") or [] for r in exp.get("revs", [])),
                      key=lambda r: r["name"] or r["rev"])
        if baseline["rev"] == "workspace" or not runs:
            continue
        for entry, name in [(baseline, f"baseline ({baseline['name'] or baseline['rev'][:7]})"),
                            *((r, r["name"] or r["rev"][:7]) for r in runs)]:
            got = shown_values(entry)
            rows.append({"name": name, "alpha": got.get("params.toml.router.alpha"),
                         "strategy": got.get("params.toml.route.strategy", "persyn"),
                         "accuracy": got.get(f"{layout.metrics(student, 'eval')}.trained.accuracy"),
                         "regret": got.get(f"{layout.metrics(student, 'router')}.router.regret"),
                         "used": got.get(f"{layout.metrics(student, 'dataset')}.generations.used")})
    return rows
