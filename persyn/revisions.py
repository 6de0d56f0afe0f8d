"""Where persyn meets git and DVC: revisions, DVC experiments and what was built at either.

The pipeline library (config … dataset) knows nothing of DVC. `persyn release`, `persyn diff` and
`persyn report` read the repository through this module alone: git and `dvc` on the command line,
and DVC's own view of a revision (dvc.api.DVCFileSystem), which also serves outputs that only the
DVC cache holds.
"""

from __future__ import annotations

import io as bytes_io
import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from persyn.config import tomllib
from persyn.errors import PersynError

METRICS = ("router", "dataset", "train", "eval")


def run(command: list[str], cwd: Path) -> str:
    """A git or dvc command's stdout; its failure is one PersynError with what it printed."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PersynError(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()[:400]}")
    return result.stdout


def commit_of(repo: Path, rev: str = "HEAD") -> str:
    return run(["git", "rev-parse", rev], repo).strip()


def resolve_revision(repo: Path, rev: str) -> str:
    """A git revision, or the name of a DVC experiment."""
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                      capture_output=True).returncode == 0:
        return rev
    refs = run(["git", "for-each-ref", "refs/exps", "--format=%(refname)"], repo).split()
    matches = [ref for ref in refs if ref.rsplit("/", 1)[-1] == rev]
    if not matches:
        raise PersynError(f"'{rev}' is neither a git revision nor a DVC experiment")
    return matches[0]


def read_revision(repo: Path, rev: str) -> dict[str, Any]:
    """params, metrics and dataset records as they were at a revision."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(repo), rev=resolve_revision(repo, rev))
    params = tomllib.loads(fs.read_text("params.toml"))
    metrics = {m: json.loads(fs.read_text(f"metrics/{m}.json")) for m in METRICS if fs.exists(f"metrics/{m}.json")}
    try:
        shards = sorted(p for p in fs.ls("data/dataset", detail=False) if p.rsplit("/", 1)[-1].startswith("train-"))
        records = [r for shard in shards for r in pl.read_parquet(bytes_io.BytesIO(fs.read_bytes(shard))).to_dicts()]
    except FileNotFoundError:
        raise PersynError(f"{rev} has no data/dataset in the DVC cache (dvc pull, or build it)") from None
    return {"params": params, "metrics": metrics, "records": records}


def copy_revision(repo: Path, rev: str, patterns: Iterable[str], target: Path) -> str:
    """Copy the files matching `patterns` (globs), as they were at a git revision or DVC experiment,
    into `target`; the revision's commit."""
    from dvc.api import DVCFileSystem

    resolved = resolve_revision(repo, rev)
    fs = DVCFileSystem(str(repo), rev=resolved)
    for path in sorted({p for pattern in patterns for p in fs.glob(pattern) if fs.isfile(p)}):
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(path, str(target / path))
        except FileNotFoundError:
            raise PersynError(f"{rev}: {path} is not in the DVC cache (dvc pull, or build it)") from None
    return commit_of(repo, resolved)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys: {"a": {"b": 1}} → {"a.b": 1}."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def shown_values(entry: dict[str, Any]) -> dict[str, Any]:
    """One `dvc exp show --json` revision's params and metrics, flattened to
    "params.toml.router.alpha" / "metrics/eval.json.trained.accuracy" keys."""
    data = entry.get("data") or {}
    return flatten({path: value.get("data", {}) for group in ("params", "metrics")
                    for path, value in (data.get(group) or {}).items()})


def experiments(repo: Path) -> list[dict[str, Any]]:
    """α, strategy and headline metrics of each baseline commit that has DVC experiments, then of
    its experiments (`dvc exp show`); empty when there are no experiments."""
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
                         "accuracy": got.get("metrics/eval.json.trained.accuracy"),
                         "regret": got.get("metrics/router.json.router.regret"),
                         "used": got.get("metrics/dataset.json.generations.used")})
    return rows
