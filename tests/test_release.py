"""persyn diff on two planted revisions of a real git + DVC repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from persyn.project import release, revisions
from persyn.core.errors import PersynError


def record(i: int, teacher: str, answer: str) -> dict:
    return {"id": f"{i:016x}", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}],
            "teacher": teacher, "model": f"local:{teacher}@sha256:0", "quality": None, "learnability": None,
            "split": "pool"}


def commit(repo: Path, records: list[dict], alpha: float, accuracy: float, message: str) -> None:
    (repo / "data/dataset/s").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(records).write_parquet(repo / "data/dataset/s/train-00000-of-00001.parquet")
    (repo / "params.toml").write_text(f"[router]\nalpha = {alpha}\n\n[route]\nstrategy = \"persyn\"\n")
    (repo / "metrics/s").mkdir(parents=True, exist_ok=True)
    (repo / "metrics/s/eval.json").write_text(json.dumps({"trained": {"accuracy": accuracy, "prompts": 4}}))
    for command in (["dvc", "add", "-q", "data/dataset/s"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True)


def two_revisions(repo: Path) -> None:
    """A git + DVC repository with revisions `first` and HEAD of student s's dataset."""
    repo.mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    commit(repo, [record(1, "a", "1"), record(2, "a", "2"), record(3, "b", "3"), record(4, "b", "4")], 0.4, 0.25,
           "first")
    subprocess.run(["git", "tag", "first"], cwd=repo, check=True)
    # id 1 removed, id 5 added, id 2 moves to teacher b, id 3 gets a new answer, id 4 unchanged
    commit(repo, [record(2, "b", "2"), record(3, "b", "three"), record(4, "b", "4"), record(5, "a", "5")], 0.8, 0.5,
           "second")


def test_diff_counts_exactly_what_changed(tmp_path: Path) -> None:
    two_revisions(tmp_path)
    result = release.diff(tmp_path, "first", "HEAD", "s")
    assert result["records"] == {"added": 1, "removed": 1, "changed_teacher": 1, "changed_response": 1, "unchanged": 1}
    assert result["params"] == {"router.alpha": [0.4, 0.8]}
    assert result["shares"] == {"a": [0.5, 0.25], "b": [0.5, 0.75]}
    assert result["metrics"] == {"eval.trained.accuracy": [0.25, 0.5]}
    text = release.markdown(result)
    assert "| router.alpha | 0.4 | 0.8 |" in text and "| changed teacher | 1 |" in text and "| a | 50.0% | 25.0% |" in text


def test_diff_on_a_fresh_clone_without_the_outputs_is_one_line(tmp_path: Path) -> None:
    two_revisions(tmp_path / "origin")
    subprocess.run(["git", "clone", "-q", str(tmp_path / "origin"), str(tmp_path / "clone")], check=True)
    with pytest.raises(PersynError, match=r"^first: data/dataset/s is not in the local DVC cache: `dvc pull`"):
        release.diff(tmp_path / "clone", "first", "HEAD", "s")
    result = subprocess.run([sys.executable, "-c", "from persyn.cli import main; main()", "diff", "first", "HEAD",
                             "--student", "s"], cwd=tmp_path / "clone", capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_dvc_runs_through_this_interpreter_not_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unactivated venv: no dvc on PATH, yet `.venv/bin/persyn report` reaches DVC."""
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                if not (Path(p) / "dvc").exists()))
    assert revisions.run(["dvc", "--version"], tmp_path).strip()
    monkeypatch.setattr(revisions.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PersynError, match="DVC is not installed for"):
        revisions.run(["dvc", "--version"], tmp_path)
