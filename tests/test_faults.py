"""Faults a user meets, with real processes: a damaged cache row under a real `dvc repro`, two
builds at once on one cache, and a disk that fills mid-build."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from persyn.testing.dvcproject import Project, make_project, params_toml

pytestmark = pytest.mark.slow

KEEP_TRUNCATED = ('[assemble]\nname = "tiny"', '[assemble]\nname = "tiny"\ndrop_truncated = false')
SLOW_SAMPLE = ("router_size = 10", "router_size = 16"), ("[generation]\nmax_tokens = 8\nbatch_size = 4",
                                                           "[generation]\nmax_tokens = 96\nbatch_size = 2")


def tiny_params(models: dict[str, Path], *changes: tuple[str, str]) -> str:
    """The tiny pipeline, keeping truncated answers (random tiny models rarely stop within max_tokens)."""
    params = params_toml(models)
    for old, new in ((KEEP_TRUNCATED,) if "drop_truncated" not in params else ()) + changes:
        assert old in params
        params = params.replace(old, new)
    return params


def slow_params(models: dict[str, Path]) -> str:
    """Generation long enough (16 answers of up to 96 tokens, batches of 2) for two builds to overlap."""
    return tiny_params(models, *SLOW_SAMPLE)


def rows(database: Path, kind: str = "generate") -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT COUNT(*) FROM requests WHERE kind = ?", (kind,)).fetchone()[0]


def test_damaged_rows_are_recomputed_by_a_real_repro(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", tmp_path / "cache", tiny_params(tiny_models))
    project.repro("sample@a")
    built = project.file_bytes("data/sample/a.parquet")
    database = tmp_path / "cache/requests/requests.sqlite"
    with sqlite3.connect(database) as connection:
        damaged = [key for (key,) in connection.execute(
            "SELECT key FROM requests WHERE kind = 'generate' ORDER BY key LIMIT 3")]
        connection.executemany("UPDATE requests SET value = '{\"text\": \"torn' WHERE key = ?", [(k,) for k in damaged])
    verify = subprocess.run(["persyn", "cache", "verify"], cwd=project.path, env=project.env, capture_output=True, text=True)
    assert verify.returncode == 1 and all(f"{key}: value is not valid JSON" in verify.stdout for key in damaged)
    result = project.run("dvc", "repro", "-f", "-s", "sample@a")
    warnings = [line for line in result.stderr.splitlines() if "is damaged" in line]
    assert len(warnings) == 3 and all(any(key in line and "local:" in line for line in warnings) for key in damaged)
    assert "Traceback" not in result.stderr and project.file_bytes("data/sample/a.parquet") == built
    assert json.loads(project.file_bytes("runs/sample@a.json"))["generated"] == 3
    project.run("persyn", "cache", "verify")  # overwritten: clean again


def test_a_cold_and_a_cached_build_give_the_same_lock(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    cold = make_project(tmp_path / "cold", tmp_path / "cache", tiny_params(tiny_models))
    cold.repro("assemble")
    warm = make_project(tmp_path / "warm", tmp_path / "cache", tiny_params(tiny_models))  # same cache, now full
    warm.repro("assemble")
    assert json.loads(warm.file_bytes("runs/generate@student-a.json"))["generated"] == 0
    assert warm.file_bytes("dvc.lock") == cold.file_bytes("dvc.lock")
    assert warm.file_bytes("metrics/student/dataset.json") == cold.file_bytes("metrics/student/dataset.json")


def generated_by(*projects: Project) -> int:
    return sum(json.loads(path.read_text())["generated"] for project in projects
               for path in (project.path / "runs").glob("*.json"))


def test_two_builds_at_once_compute_each_request_once(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    params = slow_params(tiny_models)
    serial = make_project(tmp_path / "serial", tmp_path / "serial-cache", params)
    serial.repro("assemble")
    clones = [make_project(tmp_path / f"clone{i}", tmp_path / "shared", params) for i in range(2)]
    builds = [subprocess.Popen(["dvc", "repro", "assemble"], cwd=c.path, env=c.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for c in clones]
    outputs = [b.communicate(timeout=900)[0] for b in builds]
    assert [b.returncode for b in builds] == [0, 0], outputs
    database = tmp_path / "shared/requests/requests.sqlite"
    assert generated_by(*clones) == rows(database) == rows(serial.env["PERSYN_CACHE_DIR"] + "/requests/requests.sqlite")
    assert "computed by another process" in "".join(outputs)  # they really overlapped, and shared
    for clone in clones:
        assert clone.lock_hashes() == serial.lock_hashes()
        assert clone.file_bytes("metrics/student/dataset.json") == serial.file_bytes("metrics/student/dataset.json")
    clones[0].run("persyn", "cache", "verify")


def exp_metrics(project: Project) -> dict[float, dict]:
    """router.alpha → the metrics of each experiment of the project."""
    found = {}
    for commit in json.loads(project.run("dvc", "exp", "show", "--json").stdout):
        for experiment in (commit.get("experiments") or []):
            data = experiment["revs"][0]["data"]
            alpha = data["params"]["params.toml"]["data"]["router"]["alpha"]
            found[alpha] = {path: value["data"] for path, value in data["metrics"].items() if "data" in value}
            assert {"metrics/student/dataset.json", "metrics/student/router.json"} <= set(found[alpha])  # what assemble builds
    return found


def test_queued_experiments_two_at_a_time_equal_their_serial_runs(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    params = tiny_params(tiny_models)
    queued = make_project(tmp_path / "queued", tmp_path / "shared", params)
    serial = make_project(tmp_path / "serial", tmp_path / "serial-cache", params)
    for alpha in (0.2, 0.7):
        queued.run("dvc", "exp", "run", "--queue", "-S", f"params.toml:router.alpha={alpha}", "assemble")
        serial.run("dvc", "exp", "run", "-S", f"params.toml:router.alpha={alpha}", "assemble")
    queued.run("dvc", "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline and any(s in (status := queued.run("dvc", "queue", "status").stdout)
                                         for s in ("Queued", "Running")):
        time.sleep(2)
    assert "Failed" not in status, status
    assert exp_metrics(queued) == exp_metrics(serial) and len(exp_metrics(serial)) == 2
    queued.run("persyn", "cache", "verify")
    assert rows(tmp_path / "shared/requests/requests.sqlite") == rows(tmp_path / "serial-cache/requests/requests.sqlite")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (a real filesystem that fills up); needs root to mount."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_stops_the_stage_cleanly_and_the_next_run_completes(tiny_models: dict[str, Path], tmp_path: Path,
                                                                        small_disk: Path) -> None:
    params = slow_params(tiny_models)
    reference = make_project(tmp_path / "reference", tmp_path / "reference-cache", params)
    reference.repro("sample@a")
    project = make_project(tmp_path / "p", small_disk / "cache", params)
    project.repro("prompts")
    database = small_disk / "cache/requests/requests.sqlite"
    project.run("persyn", "cache", "stats")  # creates the empty cache
    filler = small_disk / "filler"
    with filler.open("wb") as handle:  # fill the disk to within a few pages: it fills while answers are committed
        free = subprocess.run(["df", "--output=avail", "-B1", str(small_disk)], capture_output=True, text=True)
        handle.write(b"\0" * (int(free.stdout.split()[-1]) - 24 * 1024))
    failed = subprocess.run(["dvc", "repro", "sample@a"], cwd=project.path, env=project.env, capture_output=True, text=True)
    assert failed.returncode != 0
    assert f"persyn: error: request cache {database}:" in failed.stderr and "the disk is full" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (project.path / "data/sample/a.parquet").exists()  # no partial artefact
    filler.unlink()  # space freed
    project.repro("sample@a")
    assert project.file_bytes("data/sample/a.parquet") == reference.file_bytes("data/sample/a.parquet")
    project.run("persyn", "cache", "verify")
