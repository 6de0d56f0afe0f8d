"""Benchmark: what a repro after an α change costs, against a cold build, on the embedded default.

Clones this repository's HEAD into a scratch directory, builds `assemble` cold (empty request
cache; converted models are shared so that the one-time conversion is not counted), changes
router.alpha, builds again, and prints wall times and generations performed against the
minimum possible (the prompts whose route changed).

    python bench/cache_bench.py [--alpha 0.2] [--target assemble]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import polars as pl

from persyn.core import layout
from scratch import scratch_project


def repro(project: Path, env: dict[str, str], target: str) -> float:
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", target], cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def routed(project: Path) -> dict[str, set[str]]:
    """"<student>/<teacher>" → the prompt ids routed to that teacher for that student."""
    return {f"{path.parent.name}/{path.stem}": set(pl.read_parquet(path)["id"].to_list())
            for path in (project / layout.ROUTES).glob("*/*.parquet")}


def generated(project: Path, since: float = 0.0) -> int:
    """Teacher generations counted by the run logs (layout.run_log) of the sample@ and generate@
    stages that ran after `since`."""
    return sum(json.loads(p.read_text())["generated"] for p in (project / layout.RUNS).glob("*.json")
               if p.name.startswith(("sample@", "generate@")) and p.stat().st_mtime > since)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=0.2, help="the new router.alpha")
    parser.add_argument("--target", default="assemble")
    args = parser.parse_args()
    scratch, project, env = scratch_project("persyn-bench-")

    cold = repro(project, env, args.target)
    cold_generations = generated(project)
    before = routed(project)
    params = project / "params.toml"
    text = params.read_text()
    old = next(line for line in text.splitlines() if line.startswith("alpha = "))
    params.write_text(text.replace(old, f"alpha = {args.alpha}", 1))
    started = time.time()
    warm = repro(project, env, args.target)
    after = routed(project)
    pool = set(pl.read_parquet(project / layout.PROMPTS).filter(pl.col("split") == "pool")["id"].to_list())
    moved = sum(len((after[t] - before.get(t, set())) & pool) for t in after)
    warm_generations = generated(project, started)
    print(f"embedded default, router.{old.split('#')[0].strip()} -> {args.alpha}; scratch {scratch}")
    print(f"{'run':<28}{'wall s':>9}{'generations':>13}{'minimum':>9}")
    print(f"{'cold build':<28}{cold:>9.1f}{cold_generations:>13}{'':>9}")
    print(f"{'after the alpha change':<28}{warm:>9.1f}{warm_generations:>13}{moved:>9}")


if __name__ == "__main__":
    main()
