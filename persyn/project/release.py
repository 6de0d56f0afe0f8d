"""Versioned dataset releases, and what changed between two revisions.

A release is a git tag (GTO convention `<name>@v<version>`), a DVC-tracked copy of the dataset
with its card and provenance, and an entry in dvc.yaml's `artifacts:` section. Revisions are read
through persyn.project.revisions, the one module that talks to git and DVC for release, diff and report.
"""

from __future__ import annotations

import hashlib
import io as bytes_io
import json
import re
import shutil
from pathlib import Path
from typing import Any

from persyn.pipeline import card as card_module
from persyn.params import config as config_module
from persyn.core import layout
from persyn.pipeline import dataset
from persyn.params.config import tomllib
from persyn.core.errors import PersynError
from persyn.core.io import atomic_directory, write_json
from persyn.project.revisions import METRICS, commit_of, flatten, read_revision, run

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def card(name: str, version: str, params: config_module.Params, metrics: dict[str, dict], provenance: dict) -> str:
    """The dataset card (persyn.pipeline.card) with what a release adds: the version, the router's and the
    eval's numbers in the header's `persyn` key and in "How it was made", the git commit and dvc.lock."""
    built = metrics["dataset"]
    summary = {
        "records": built["records"],
        "alpha": params.router.alpha,
        "strategy": params.route.strategy,
        "generations_used": built["generations"]["used"],
        "generate_then_select": built["generations"]["generate_then_select"],
        "router_regret": metrics["router"]["router"]["regret"],
        "eval_trained": metrics.get("eval", {}).get("trained"),
        "eval_untrained": metrics.get("eval", {}).get("untrained"),
        "eval_shifted": metrics.get("eval", {}).get("eval_shifted"),
    }
    router = metrics["router"]
    evaluation = metrics.get("eval", {})
    shifted = evaluation.get("eval_shifted")  # phrasings the built-in generator never writes
    facts = [
        f"router head `{params.router.head}`; on its held-out subset: regret {router['router']['regret']:.4f} "
        f"(best single teacher {router['best_single']['regret']:.4f}, random {router['random']['regret']:.4f}), top-1 agreement "
        f"{router['router']['top1']:.3f}, pairwise accuracy {router['pairwise_accuracy']}",
        f"student after fine-tuning on this dataset: {evaluation.get('trained', 'not evaluated')}; "
        f"before: {evaluation.get('untrained', 'not evaluated')}",
        *([] if shifted is None else [f"on the shifted eval set: after {shifted['trained']}; before {shifted['untrained']}"]),
        f"git commit `{provenance['git_commit']}`, dvc.lock sha256 `{provenance['dvc_lock_sha256']}`",
    ]
    return card_module.build(params, name, built, provenance["teachers"], title=f"{name} v{version}",
                             data_files=layout.RELEASE_SHARDS, facts=facts, extra={"persyn": summary},
                             footer="`provenance.json` beside this card has the full params, metrics and file checksums.")


def release(version: str, repo: Path = Path("."), students: list[str] | None = None) -> list[Path]:
    """Release each chosen student's dataset (default: every student) as releases/<name>-<student>/v<version>/:
    track it with DVC, record the artifact, commit once and tag each <name>-<student>@v<version>."""
    if not SEMVER.match(version):
        raise PersynError(f"release: '{version}' is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)")
    params = config_module.load(repo / "params.toml")
    chosen = sorted(params.students) if not students else students
    for student in chosen:
        params.for_student(student)  # an unknown name stops here, naming the configured ones
    names = {s: dataset.release_name(params.assemble.name, s) for s in chosen}
    for name in names.values():
        if run(["git", "tag", "--list", f"{name}@v{version}"], repo).strip():
            raise PersynError(f"release: tag {name}@v{version} already exists; releases are never overwritten")
    dirty = run(["git", "status", "--porcelain"], repo).strip()
    if dirty:
        raise PersynError(f"release: the git tree is dirty; commit or stash first:\n{dirty}")
    stale = json.loads(run(["dvc", "status", "--json"], repo) or "{}")
    if stale:
        raise PersynError(f"release: the pipeline is not up to date (run dvc repro): {', '.join(sorted(stale))}")
    targets = [write_release(repo, params.for_student(s), s, names[s], version) for s in chosen]
    tracked = []
    for student, target in zip(chosen, targets):
        relative = target.relative_to(repo)
        run(["dvc", "add", str(relative)], repo)
        record_artifact(repo / "dvc.yaml", names[student], str(relative),
                        f"{names[student]} v{version}: personalised distillation dataset for student {student}")
        tracked += [f"{relative}.dvc", str(relative.parent / ".gitignore")]
    tags = [f"{names[s]}@v{version}" for s in chosen]
    run(["git", "add", *tracked, "dvc.yaml"], repo)
    run(["git", "commit", "-q", "-m", f"Release {', '.join(tags)}"], repo)
    for student, tag in zip(chosen, tags):
        run(["git", "tag", "-a", tag, "-m", f"Release {names[student]} {version}"], repo)
    if run(["dvc", "remote", "list"], repo).strip():
        run(["dvc", "push", *tracked[::2]], repo)
    return targets


def write_release(repo: Path, params: config_module.Params, student: str, name: str, version: str) -> Path:
    """releases/<name>/v<version>/: the student's shards, its card and provenance.json."""
    records = dataset.read(repo / layout.dataset(student))
    metrics = {m: json.loads((repo / layout.metrics(student, m)).read_text())
               for m in METRICS if (repo / layout.metrics(student, m)).is_file()}
    if (repo / layout.SHARING_METRICS).is_file():
        metrics["sharing"] = json.loads((repo / layout.SHARING_METRICS).read_text())
    provenance = {
        "name": name,
        "version": version,
        "tag": f"{name}@v{version}",
        "student_name": student,
        "git_commit": commit_of(repo),
        "dvc_lock_sha256": sha256_bytes((repo / "dvc.lock").read_bytes()),
        "teachers": card_module.teacher_models(records),
        "student": params.student.model,
        "params": tomllib.loads((repo / "params.toml").read_text()),
        "metrics": metrics,
    }
    target = repo / layout.release(name, version)
    with atomic_directory(target) as out:
        (out / layout.RELEASE_DATA).mkdir()
        for shard in sorted((repo / layout.dataset(student)).glob("train-*.parquet")):
            shutil.copy(shard, out / layout.RELEASE_DATA / shard.name)
        provenance["files"] = {p.relative_to(out).as_posix(): sha256_bytes(p.read_bytes())
                               for p in sorted((out / layout.RELEASE_DATA).iterdir())}
        (out / "README.md").write_text(card(name, version, params, metrics, provenance))
        write_json(out / "provenance.json", provenance)
    return target


def record_artifact(dvc_yaml: Path, name: str, path: str, description: str) -> None:
    """Point DVC's `artifacts: <name>` at this release, keeping the rest of dvc.yaml as written."""
    from ruamel.yaml import YAML

    document = YAML()
    document.preserve_quotes = True
    document.indent(mapping=2, sequence=4, offset=2)
    document.width = 4096
    data = document.load(dvc_yaml.read_text())
    data.setdefault("artifacts", {})[name] = {"path": path, "type": "dataset", "desc": description}
    stream = bytes_io.StringIO()
    document.dump(data, stream)
    dvc_yaml.write_text(stream.getvalue())


def diff(repo: Path, rev_a: str, rev_b: str, student: str) -> dict[str, Any]:
    """What changed for one student from rev_a to rev_b: params, teacher shares, records and metrics."""
    a, b = read_revision(repo, rev_a, student), read_revision(repo, rev_b, student)
    params_a, params_b = flatten(a["params"]), flatten(b["params"])
    by_a = {r["id"]: r for r in a["records"]}
    by_b = {r["id"]: r for r in b["records"]}
    common = by_a.keys() & by_b.keys()
    teachers = sorted({r["teacher"] for r in a["records"]} | {r["teacher"] for r in b["records"]})

    def shares(records: list[dict]) -> dict[str, float]:
        return {t: sum(r["teacher"] == t for r in records) / len(records) if records else 0.0 for t in teachers}

    metrics_a, metrics_b = flatten(a["metrics"]), flatten(b["metrics"])
    return {
        "revisions": [rev_a, rev_b],
        "student": student,
        "params": {k: [params_a.get(k), params_b.get(k)] for k in sorted(params_a.keys() | params_b.keys())
                   if params_a.get(k) != params_b.get(k)},
        "shares": {t: [shares(a["records"])[t], shares(b["records"])[t]] for t in teachers},
        "records": {
            "added": len(by_b.keys() - by_a.keys()),
            "removed": len(by_a.keys() - by_b.keys()),
            "changed_teacher": sum(by_a[i]["teacher"] != by_b[i]["teacher"] for i in common),
            "changed_response": sum(by_a[i]["teacher"] == by_b[i]["teacher"]
                                    and by_a[i]["messages"] != by_b[i]["messages"] for i in common),
            "unchanged": sum(by_a[i] == by_b[i] for i in common),
        },
        "metrics": {k: [metrics_a.get(k), metrics_b.get(k)] for k in sorted(metrics_a.keys() | metrics_b.keys())
                    if metrics_a.get(k) != metrics_b.get(k) and isinstance(metrics_a.get(k, metrics_b.get(k)), (int, float))},
    }


def markdown(result: dict[str, Any]) -> str:
    """The diff as markdown tables (also what the terminal shows)."""
    rev_a, rev_b = result["revisions"]

    def table(title: str, rows: dict[str, list[Any]]) -> str:
        body = "\n".join(f"| {k} | {v[0]} | {v[1]} |" for k, v in rows.items()) or "| (none) | | |"
        return f"### {title}\n\n| | {rev_a} | {rev_b} |\n|---|---|---|\n{body}\n"

    counts = "\n".join(f"| {k.replace('_', ' ')} | {v} |" for k, v in result["records"].items())
    shares = {t: [f"{x:.1%}" for x in v] for t, v in result["shares"].items()}
    return "\n".join([
        f"## persyn diff {rev_a} → {rev_b} (student {result['student']})\n",
        table("params", result["params"]),
        table("teacher shares", shares),
        f"### records\n\n| | count |\n|---|---|\n{counts}\n",
        table("metrics", result["metrics"]),
    ])
