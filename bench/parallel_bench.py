"""Two cold builds at once on one request cache against the same two builds one after the other.

What `dvc queue start -j 2`, or two clones sharing $PERSYN_CACHE_DIR, does: with claims, the second
build takes the requests the first is not computing and waits for the rest instead of repeating
them, and each process gets its share of the cores for torch. Uses the test suite's tiny random
models (persyn/testing/tiny.py) with answers long enough for generation to matter (16 router prompts, up
to 96 tokens each, batches of 2); `dvc repro assemble` in fresh clones.

    python bench/parallel_bench.py
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from persyn.core import layout
from persyn.testing import tiny
from persyn.testing.dvcproject import Project, make_project, params_toml

CHANGES = (("router_size = 10", "router_size = 16"),
           ("[generation]\nmax_tokens = 8\nbatch_size = 4", "[generation]\nmax_tokens = 96\nbatch_size = 2"))


def models(root: Path) -> dict[str, Path]:
    return {"student": tiny.causal_lm(root / "student", seed=0), "teacher_a": tiny.causal_lm(root / "teacher_a", seed=1),
            "teacher_b": tiny.causal_lm(root / "teacher_b", seed=2), "base": tiny.causal_lm(root / "base", seed=3, chat=False),
            "encoder": tiny.encoder(root / "encoder"), "reward": tiny.reward_model(root / "reward")}


def start(project: Project) -> subprocess.Popen:
    return subprocess.Popen(["dvc", "repro", "assemble"], cwd=project.path, env=project.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def generated(projects: list[Project]) -> int:
    return sum(json.loads(p.read_text())["generated"] for project in projects
               for p in (project.path / layout.RUNS).glob("*.json"))


def rows(cache: Path) -> int:
    with sqlite3.connect(cache / "requests/requests.sqlite") as connection:
        return connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def run(root: Path, params: str, parallel: bool) -> tuple[float, int, int, list[dict[str, str]]]:
    mode = "parallel" if parallel else "serial"
    cache = root / f"{mode}-cache"
    projects = [make_project(root / f"{mode}{i}", cache, params) for i in range(2)]
    began = time.perf_counter()
    if parallel:
        builds = [start(p) for p in projects]
        codes = [b.wait() for b in builds]
    else:
        codes = [start(p).wait() for p in projects]
    seconds = time.perf_counter() - began
    assert codes == [0, 0], f"{mode}: a build failed"
    return seconds, generated(projects), rows(cache), [p.lock_hashes() for p in projects]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="persyn-parallel-bench-") as scratch:
        root = Path(scratch)
        params = params_toml(models(root / "models"))
        for old, new in CHANGES:
            params = params.replace(old, new)
        serial = run(root, params, parallel=False)
        parallel = run(root, params, parallel=True)
    assert parallel[3][0] == parallel[3][1] == serial[3][0], "the builds' outputs differ"
    print("| two cold builds of `dvc repro assemble`, one cache | wall (s) | answers generated | cache entries |")
    print("|---|---|---|---|")
    for name, (seconds, made, entries, _) in (("one after the other", serial), ("at the same time", parallel)):
        print(f"| {name} | {seconds:.1f} | {made} | {entries} |")
    print(f"\nparallel / serial wall time: {parallel[0] / serial[0]:.2f}; dvc.lock outputs identical")


if __name__ == "__main__":
    main()
