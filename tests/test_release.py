"""persyn diff on two planted revisions of a real git + DVC repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl

from persyn import release


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


def test_diff_counts_exactly_what_changed(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    commit(tmp_path, [record(1, "a", "1"), record(2, "a", "2"), record(3, "b", "3"), record(4, "b", "4")], 0.4, 0.25,
           "first")
    subprocess.run(["git", "tag", "first"], cwd=tmp_path, check=True)
    # id 1 removed, id 5 added, id 2 moves to teacher b, id 3 gets a new answer, id 4 unchanged
    commit(tmp_path, [record(2, "b", "2"), record(3, "b", "three"), record(4, "b", "4"), record(5, "a", "5")], 0.8, 0.5,
           "second")
    result = release.diff(tmp_path, "first", "HEAD", "s")
    assert result["records"] == {"added": 1, "removed": 1, "changed_teacher": 1, "changed_response": 1, "unchanged": 1}
    assert result["params"] == {"router.alpha": [0.4, 0.8]}
    assert result["shares"] == {"a": [0.5, 0.25], "b": [0.5, 0.75]}
    assert result["metrics"] == {"eval.trained.accuracy": [0.25, 0.5]}
    text = release.markdown(result)
    assert "| router.alpha | 0.4 | 0.8 |" in text and "| changed teacher | 1 |" in text and "| a | 50.0% | 25.0% |" in text


def test_size_categories() -> None:
    assert [release.size_category(n) for n in (5, 999, 1000, 50_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "n>1M"]
