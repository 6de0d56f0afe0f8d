"""Results: every routing strategy on the embedded default, as DVC experiments, with seeds.

Clones this repository's HEAD into a scratch directory with an empty request cache (converted
models are shared), times the cold `dvc repro` of the default (persyn, seed 0), then runs one
`dvc exp run -S ...` per (strategy, seed) and prints a markdown table of the trained student's
eval accuracy (mean ± sd over seeds), the generations each strategy used, and wall times.

    python bench/strategies.py                       # the README's table (about an hour on 2 CPUs)
    python bench/strategies.py --strategies persyn random --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from scratch import scratch_project

MAIN = ["persyn", "strongest", "random"]
ONCE = ["mix", "car", "fixed:smol", "oracle"]


def run(project: Path, env: dict[str, str], *command: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def read(project: Path, name: str) -> dict:
    return json.loads((project / "metrics" / name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=MAIN + ONCE)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds for persyn and the main baselines")
    args = parser.parse_args()
    scratch, project, env = scratch_project("persyn-results-")

    cold = run(project, env, "dvc", "repro")
    rows: dict[str, list[dict]] = {}
    for strategy in args.strategies:
        for seed in (args.seeds if strategy in MAIN else args.seeds[:1]):
            if (strategy, seed) == ("persyn", 0):
                wall = cold
            else:
                wall = run(project, env, "dvc", "exp", "run", "-n", f"{strategy.replace(':', '-')}-s{seed}",
                           "-S", f"params.toml:route.strategy={strategy}",
                           "-S", f"params.toml:train.seed={seed}", "-S", f"params.toml:route.seed={seed}")
            evaluation, dataset = read(project, "eval.json"), read(project, "dataset.json")
            rows.setdefault(strategy, []).append({
                "seed": seed, "wall_s": wall, "accuracy": evaluation["trained"]["accuracy"],
                "untrained": evaluation["untrained"]["accuracy"], "used": dataset["generations"]["used"],
                "select_all": dataset["generations"]["generate_then_select"],
                "shares": {t: v["share"] for t, v in dataset["teachers"].items()},
            })
            print(json.dumps({"strategy": strategy, **rows[strategy][-1]}), flush=True)
    (scratch / "results.json").write_text(json.dumps(rows, indent=2))

    untrained = rows[args.strategies[0]][0]["untrained"]
    print(f"\ncold `dvc repro` of the default (empty request cache): {cold:.0f} s; scratch {scratch}\n")
    print("| strategy | seeds | eval accuracy (trained student) | generations used | Generate-then-Select | teacher shares |")
    print("|---|---|---|---|---|---|")
    print(f"| untrained student | – | {untrained:.3f} | – | – | – |")
    for strategy, runs in rows.items():
        accuracy = [r["accuracy"] for r in runs]
        spread = f" ± {statistics.stdev(accuracy):.3f}" if len(accuracy) > 1 else ""
        shares = ", ".join(f"{t} {s:.0%}" for t, s in runs[0]["shares"].items())
        print(f"| {strategy} | {len(runs)} | {statistics.mean(accuracy):.3f}{spread} | {runs[0]['used']} "
              f"| {runs[0]['select_all']} | {shares} |")


if __name__ == "__main__":
    main()
