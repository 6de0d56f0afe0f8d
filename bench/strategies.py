"""Does routing help? Every routing strategy as a queued DVC experiment, with confidence intervals.

Clones this repository's HEAD into a scratch directory (empty request cache, converted models
shared), puts the profile's params in it, builds and commits the baseline (timed: the cold build),
then queues one `dvc exp run --queue -S ...` per (strategy, seed), with the same training recipe
for all and `train.seed` = `route.seed` = the seed, runs the queue (`dvc queue start -j N`) and
reads every experiment back through `dvc exp show --json`, its per-prompt eval predictions
through `dvc.api.DVCFileSystem` at the experiment's commit. Prints one markdown table: mean eval
accuracy with a 95% CI (two-level bootstrap over prompts and seeds), the paired difference against
persyn with its CI and exact sign-flip p (persyn/stats.py), generations used and teacher shares,
then the same accuracy and paired difference on the shifted eval set (split eval_shifted, where the
profile sets prompts.shifted_eval_size), then the router's regret and top-1 on held-out S.

    python bench/strategies.py --params examples/cpu-science/params.toml --seeds 0 1 2
    python bench/strategies.py --strategies persyn random --seeds 0 1      # a quick look
    python bench/strategies.py --into /tmp/persyn-strategies-XXXX --variant alpha-0 router.alpha=0

`--into` adds arms to an earlier comparison (its scratch directory keeps arms.json, every
experiment's name and arm): they are queued in the same project, on the same baseline and seeds,
and the table compares them with the experiments already there; with no new arm it resumes an
interrupted comparison (starts the queue again and waits for the experiments still queued).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # persyn from this checkout, also when run as a script

from persyn import claims, config, stats  # noqa: E402
from persyn.devices import cpu_bfloat16_units  # noqa: E402
from persyn.io import read_parquet, write_json  # noqa: E402
from persyn.report.gather import check_strategies  # noqa: E402
from persyn.schemas import check  # noqa: E402
from persyn.revisions import shown_values  # noqa: E402

SEEDED = ("train.seed", "route.seed")
POLL_S = 5.0
POLL_SHARE = 0.1  # of one core at most for the wait: `dvc exp show --json` took 3.7 s of CPU once 27
                  # experiments existed; every 5 s, up to ~40% of a core taken from the experiments it waits for
DONE = {"success", "failed"}


@dataclass
class Run:
    """One experiment as `dvc exp show` and its predictions saw it."""

    name: str
    rev: str
    strategy: str
    seed: int
    metrics: dict[str, Any]  # flattened: "metrics/eval.json.trained.accuracy", …
    trained: dict[str, dict[str, float]]  # split (eval, eval_shifted) → prompt id → score of the trained student
    untrained: dict[str, dict[str, float]]


def dvc(project: Path, env: dict[str, str], *arguments: str) -> str:
    result = subprocess.run(["dvc", *arguments], cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(arguments)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def strategies(teachers: list[str]) -> list[str]:
    """The paper's baselines plus persyn: the default list for these teachers."""
    return ["persyn", "strongest", "random", "mix", "car", *(f"fixed:{t}" for t in sorted(teachers)), "oracle"]


def experiment_name(strategy: str, seed: int) -> str:
    return f"{strategy.replace(':', '-')}-s{seed}"


def earlier_seeds(names: dict[str, str]) -> list[int]:
    """The seeds of an earlier comparison, from its experiment names (experiment_name's `-s<seed>`)."""
    return sorted({int(name.rsplit("-s", 1)[1]) for name in names})


def arms_of(chosen: list[str], variants: list[list[str]]) -> list[tuple[str, list[str]]]:
    """(label, params overrides) per arm: each strategy sets route.strategy; each `--variant LABEL
    KEY=VALUE…` sets its keys (route.strategy stays the profile's unless it sets it)."""
    arms = [(strategy, [f"route.strategy={strategy}"]) for strategy in chosen]
    for label, *sets in variants:
        if not sets or any("=" not in s for s in sets):
            raise SystemExit(f"--variant {label}: give KEY=VALUE overrides after the label")
        arms.append((label, sets))
    labels = [label for label, _ in arms]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"arm labels must differ: {labels}")
    return arms


def queue(project: Path, env: dict[str, str], arms: list[tuple[str, list[str]]], seeds: list[int]) -> dict[str, str]:
    """One queued experiment per (arm, seed); experiment name → arm label, arm by arm.

    Queued seed by seed (every arm at the first seed, then at the next): with several workers the
    seeds of one arm, which need the same new teacher answers (the oracle's: every teacher on the
    whole pool), do not run side by side and generate them twice, and the queue does not end on one
    arm's seeds alone."""
    for seed in seeds:
        for label, overrides in arms:
            # "++": set the key whether or not the profile writes it (hydra's add-or-override)
            sets = [f"params.toml:++{o}" for o in overrides] + [f"params.toml:++{key}={seed}" for key in SEEDED]
            dvc(project, env, "exp", "run", "--queue", "-n", experiment_name(label, seed),
                *(arg for s in sets for arg in ("-S", s)))
    return {experiment_name(label, seed): label for label, _ in arms for seed in seeds}


def states(project: Path, env: dict[str, str], attempts: int = 5) -> dict[str, str]:
    """Experiment name → executor state ('queued', 'running', 'success', 'failed') from `dvc exp show`,
    asked again when it fails: it can read a running experiment's info file while the worker writes it
    ("JSON file structure is corrupted"), which ended a 27-experiment run here."""
    for attempt in range(attempts):
        try:
            shown = json.loads(dvc(project, env, "exp", "show", "--json") or "[]")
            break
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(POLL_S)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            executor = experiment.get("executor") or {}
            for rev in experiment.get("revs") or []:
                if rev.get("name"):
                    found[rev["name"]] = (executor.get("state") or "success").lower()
    return found


def worker_env(env: dict[str, str], jobs: int) -> dict[str, str]:
    """The queue workers' environment: with several workers, each stage gets its share of the cores
    (torch and CTranslate2 read OMP_NUM_THREADS) unless the caller set a thread count. Without it
    every training takes all the cores: two side by side on 2 cores took 3x as long as one after the
    other, while two with one thread each did 1.25x the work of one with two (docs/results.md)."""
    if jobs == 1:
        return env
    share = str(claims.thread_budget(jobs))  # the caller's PERSYN_THREADS / OMP_NUM_THREADS win
    return {**env, "OMP_NUM_THREADS": share, "PERSYN_THREADS": share}


def run_queue(project: Path, env: dict[str, str], names: list[str], jobs: int) -> float:
    """Start the queue workers and wait until every named experiment finished; the wall time."""
    start = time.perf_counter()
    # Not through dvc()'s pipe: with -j 2 the launcher DVC leaves behind keeps the pipe open until its
    # workers exit, which blocked this wait 14 minutes after the last experiment (2026-12-02).
    log_path = project.parent / "queue-start.log"
    with open(log_path, "a") as log:
        started = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=project, env=worker_env(env, jobs),
                                 stdout=log, stderr=subprocess.STDOUT)
    if started.returncode != 0:
        raise RuntimeError(f"dvc queue start -j {jobs} failed: see {log_path}")
    try:
        while True:
            asked = time.perf_counter()
            seen = states(project, env)
            if all(seen.get(name) in DONE for name in names):
                break
            time.sleep(max(POLL_S, (time.perf_counter() - asked) / POLL_SHARE))
    finally:
        dvc(project, env, "queue", "stop")  # no idle worker left behind
    failed = [name for name in names if seen[name] == "failed"]
    if failed:
        raise RuntimeError(f"experiments failed: {', '.join(failed)} (dvc queue logs <name>)")
    return time.perf_counter() - start


def scores(project: Path, rev: str, student: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """One student's per-prompt trained and untrained scores by split, read from the DVC cache at the
    experiment's commit: no experiment is applied, so the workspace and the queue are left as they are."""
    from dvc.api import DVCFileSystem

    with tempfile.TemporaryDirectory(prefix="persyn-bench-") as folder:
        target = Path(folder) / "predictions.parquet"
        DVCFileSystem(str(project), rev=rev).get_file(f"data/eval/{student}/predictions.parquet", str(target))
        rows = read_parquet(target, "prediction")
    trained: dict[str, dict[str, float]] = {}
    untrained: dict[str, dict[str, float]] = {}
    for r in rows:
        trained.setdefault(r["split"], {})[r["id"]] = r["trained_score"]
        untrained.setdefault(r["split"], {})[r["id"]] = r["untrained_score"]
    return trained, untrained


def parse_show(shown: list[dict[str, Any]], student: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, commit, flattened params and metrics) of every named experiment in `dvc exp show --json`;
    the student's metrics/<student>/x.json are keyed metrics/x.json."""
    found = []
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name"):
                    found.append((rev["name"], rev["rev"], {key.replace(f"metrics/{student}/", "metrics/", 1): value
                                                            for key, value in shown_values(rev).items()}))
    return found


def collect(project: Path, env: dict[str, str], names: dict[str, str], student: str) -> list[Run]:
    """The named experiments (name → arm label) with one student's metrics and per-prompt predictions."""
    shown = {name: (rev, flat) for name, rev, flat
             in parse_show(json.loads(dvc(project, env, "exp", "show", "--json")), student)}
    runs = []
    for name in names:
        rev, flat = shown[name]
        trained, untrained = scores(project, rev, student)
        runs.append(Run(name, rev, names[name], int(flat["params.toml.train.seed"]),
                        flat, trained, untrained))
    return runs


def matrix(runs: list[Run], ids: list[str], untrained: bool = False, split: str = "eval") -> np.ndarray:
    """(seeds × prompts) scores on one split, seeds in ascending order; the untrained student repeats per seed."""
    ordered = sorted(runs, key=lambda r: r.seed)
    return np.array([[(r.untrained if untrained else r.trained)[split][i] for i in ids] for r in ordered])


def prompt_ids(runs: list[Run], split: str = "eval") -> list[str]:
    """The split's prompt ids, the same in every run (else there is no paired comparison)."""
    ids = sorted(runs[0].trained.get(split, {}))
    if any(sorted(r.trained.get(split, {})) != ids for r in runs):
        raise ValueError(f"experiments were evaluated on different {split} prompts: not a paired comparison")
    return ids


def interval(value: stats.Interval, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value.estimate:{sign}.3f} [{value.low:{sign}.3f}, {value.high:{sign}.3f}]"


def mean_of(runs: list[Run], key: str) -> float | None:
    values = [r.metrics.get(key) for r in runs]
    return None if any(not isinstance(v, (int, float)) for v in values) else float(np.mean(values))


def by_arm(runs: list[Run]) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.strategy, []).append(run)
    return grouped


def compare(runs: list[Run], reference: str = "persyn", resamples: int = stats.RESAMPLES,
            extra: tuple[str, ...] = (), split: str = "eval") -> list[dict[str, Any]]:
    """One row per arm (the untrained student first) on one eval split, as
    schemas/strategy_results.schema.json's `strategies` items, plus `shares` and the `extra` metrics'
    means over seeds for the table."""
    grouped = by_arm(runs)
    ids = prompt_ids(runs, split)
    seeds = {s: sorted(r.seed for r in group) for s, group in grouped.items()}
    if len({tuple(v) for v in seeds.values()}) != 1:
        raise ValueError(f"strategies ran with different seeds: {seeds}")
    base = matrix(grouped[reference], ids, split=split) if reference in grouped else None

    def row(label: str, scores: np.ndarray, group: list[Run], trained: bool) -> dict[str, Any]:
        mean = stats.mean_ci(scores, resamples)
        found: dict[str, Any] = {"strategy": label, "seeds": len(group), "mean": mean.estimate, "low": mean.low,
                                 "high": mean.high}
        if base is not None and label != reference:
            difference = stats.paired(scores, base, resamples)
            found["difference"] = {"mean": difference.difference.estimate, "low": difference.difference.low,
                                   "high": difference.difference.high, "p_value": difference.p_value}
        if trained:
            used = mean_of(group, "metrics/dataset.json.generations.used")
            prefix = "metrics/dataset.json.teachers."
            teachers = sorted({k.removeprefix(prefix).rsplit(".", 1)[0] for k in group[0].metrics
                               if k.startswith(prefix) and k.endswith(".share")})
            found |= {"generations_used": None if used is None else round(used),
                      "shares": {t: mean_of(group, f"{prefix}{t}.share") for t in teachers},
                      "extra": {key: mean_of(group, key) for key in extra}}
        return found

    first = next(iter(grouped.values()))
    return [row("untrained student", matrix(first, ids, True, split), first, trained=False),
            *(row(arm, matrix(group, ids, split=split), group, trained=True) for arm, group in grouped.items())]


def results(runs: list[Run], rows: list[dict[str, Any]], reference: str, command: str,
            shifted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The comparison as `persyn report --strategies FILE` reads it (schemas/strategy_results.schema.json):
    `rows` on the eval split, `shifted` (compare's rows on eval_shifted) where the runs have that split."""
    def kept(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = ("strategy", "seeds", "mean", "low", "high", "generations_used", "difference")
        return [{k: row[k] for k in keep if k in row} for row in found]

    found = {"metric": "accuracy", "prompts": len(prompt_ids(runs)), "reference": reference, "command": command,
             "strategies": kept(rows)}
    if shifted:
        found["eval_shifted"] = {"prompts": len(prompt_ids(runs, "eval_shifted")), "strategies": kept(shifted)}
    return found


def write_results(path: Path, document: dict[str, Any]) -> None:
    """results.json, checked as `persyn report --strategies` will read it before a byte is written."""
    check(document, "strategy_results", str(path))
    check_strategies(document, path)
    write_json(path, document)


def versus(row: dict[str, Any]) -> tuple[str, str]:
    """A compare row's difference against the reference with its CI, and its p ("–" for the reference)."""
    if "difference" not in row:
        return "–", "–"
    d = row["difference"]
    return interval(stats.Interval(d["mean"], d["low"], d["high"]), signed=True), f"{d['p_value']:.2g}"


def comparison(runs: list[Run], reference: str = "persyn", resamples: int = stats.RESAMPLES,
               extra: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """compare's rows on the eval split, and on eval_shifted where the runs have it (else None)."""
    shifted = compare(runs, reference, resamples, split="eval_shifted") if runs[0].trained.get("eval_shifted") else None
    return compare(runs, reference, resamples, extra), shifted


def table(runs: list[Run], rows: list[dict[str, Any]], shifted: list[dict[str, Any]] | None,
          reference: str = "persyn", extra: tuple[str, ...] = ()) -> str:
    """The markdown comparison of `comparison`'s rows: one row per arm (and the untrained student), then
    the router; `extra` metrics (flattened keys, "metrics/dataset.json.fallback.total.recovered") add
    columns, mean over seeds."""
    lines = [f"| strategy | seeds | eval accuracy [95% CI] | Δ vs {reference} [95% CI] | p | generations used | "
             "teacher shares |" + "".join(f" {key.split('.json.')[-1]} |" for key in extra),
             "|---|---|---|---|---|---|---|" + "---|" * len(extra)]
    for row in rows:
        mean = stats.Interval(row["mean"], row["low"], row["high"])
        difference, p = versus(row)
        used = row.get("generations_used")
        shares = ", ".join(f"{t} {v:.0%}" for t, v in row.get("shares", {}).items()) or "–"
        means = [row.get("extra", {}).get(key) for key in extra]
        lines.append(f"| {row['strategy']} | {row['seeds']} | {interval(mean)} | {difference} | {p} "
                     f"| {'–' if used is None else used} | {shares} |"
                     + "".join(" – |" if m is None else f" {m:.4g} |" for m in means))
    if shifted:
        lines += ["", "The same students on the shifted eval set (split eval_shifted: phrasings the built-in generator "
                  "never writes); a gain on eval that vanishes here was learnt from the template.", "",
                  f"| strategy | seeds | shifted accuracy [95% CI] | Δ vs {reference} [95% CI] | p |",
                  "|---|---|---|---|---|"]
        lines += [f"| {row['strategy']} | {row['seeds']} | {interval(stats.Interval(row['mean'], row['low'], row['high']))} "
                  f"| {' | '.join(versus(row))} |" for row in shifted]
    router = ["", "Router on held-out S (metrics/router.json, mean over experiments): regret = oracle r − chosen r, "
              "top-1 = chose an oracle teacher.", "", "| choice | regret | top-1 |", "|---|---|---|"]
    best = runs[0].metrics.get("metrics/router.json.best_single.teacher", "?")
    for key, label in (("router", "router"), ("best_single", f"best single ({best})"), ("random", "random")):
        regret, top1 = (mean_of(runs, f"metrics/router.json.{key}.{m}") for m in ("regret", "top1"))
        if regret is not None and top1 is not None:
            router.append(f"| {label} | {regret:.4f} | {top1:.4f} |")
    return "\n".join(lines + (router if len(router) > 5 else []))


def power_note(runs: list[Run], reference: str = "persyn", effect: float = 0.05) -> str:
    """What this run says about sizing the next: the design estimated from each strategy against the
    reference (stats.estimate_design), the detectable effect now, and the prompts a 5-point one needs."""
    ids = prompt_ids(runs)
    by_strategy = by_arm(runs)
    if reference not in by_strategy:
        return ""
    base = matrix(by_strategy[reference], ids)
    seeds = base.shape[0]
    lines = ["", f"Power (paired, α = 0.05, power 0.8) from this run's own differences against {reference}:", "",
             "| strategy | sd | ρ (seeds) | seed sd | detectable now | prompts for 5 points |", "|---|---|---|---|---|---|"]
    for strategy, group in by_strategy.items():
        if strategy == reference:
            continue
        design = stats.estimate_design(matrix(group, ids), base)
        try:
            needed = str(stats.prompts_needed(design, effect, seeds))
        except ValueError:
            needed = "more seeds first"
        lines.append(f"| {strategy} | {design.sd:.3f} | {design.rho:.2f} | {design.seed_sd:.3f} | "
                     f"{stats.mde(design, len(ids), seeds):.3f} | {needed} |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU the figures were measured on. Both the times and the answers depend on it: one training
    took about 85 s on a 2-core CPU with AMX and 152 s on a 2-core EPYC with AVX512-BF16, and the same build
    gave the untrained student 0.036 on the first and 0.044 on the second (most likely CTranslate2's int8
    kernels, which differ by instruction set): compare runs from one kind of machine only."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in info.splitlines())}
    units = cpu_bfloat16_units(info) or "none"
    return f"{fields.get('model name', 'unknown CPU')}, {os.cpu_count()} cores, bfloat16 units: {units}"


def build_baseline(project: Path, env: dict[str, str]) -> float:
    """Build and commit the baseline, so that every queued experiment starts from its outputs."""
    start = time.perf_counter()
    dvc(project, env, "repro")
    wall = time.perf_counter() - start
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench baseline"],
                   cwd=project, check=True)
    return wall


def main() -> None:
    from scratch import existing_project, scratch_project

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, help="a params profile to build with (default: the repository's params.toml)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", help="default: persyn strongest random mix car fixed:<each teacher> oracle")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL KEY=VALUE",
                        help="an extra arm: a label, then params overrides (route.fallback=1); repeatable")
    parser.add_argument("--reference", help="the arm every other is compared with (default: the first)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="reuse this machine's request cache (answers already generated are not timed again)")
    parser.add_argument("--show", nargs="+", default=[], metavar="KEY",
                        help="extra metric columns, flattened: metrics/dataset.json.fallback.total.recovered")
    parser.add_argument("--student", help="whose datasets and evaluation to compare (default: the first student)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="queue workers, each given its share of the cores (OMP_NUM_THREADS); default 1")
    parser.add_argument("--into", type=Path, metavar="SCRATCH",
                        help="add the arms to the comparison in this earlier scratch directory (same baseline and seeds)")
    args = parser.parse_args()
    if args.into and (args.params or args.shared_cache):
        raise SystemExit("--into reuses the earlier project: its params and cache stay as they were built")
    earlier: dict[str, str] = {}
    if args.into:
        scratch, project, env = existing_project(args.into)
        earlier = json.loads((scratch / "arms.json").read_text())
    else:
        scratch, project, env = scratch_project("persyn-strategies-", share_requests=args.shared_cache)
        if args.params:
            shutil.copy(args.params, project / "params.toml")
    params = config.load(project / "params.toml")
    chosen = args.strategies if args.strategies is not None else [] if args.variant or args.into \
        else strategies(list(params.teachers))
    arms = arms_of(chosen, args.variant)
    if clash := sorted({label for label, _ in arms} & set(earlier.values())):
        raise SystemExit(f"{scratch} already has the arms {clash}: give the new arms other labels")
    if earlier and (before := earlier_seeds(earlier)) != sorted(args.seeds):
        raise SystemExit(f"{scratch} compares seeds {before}: give --seeds {' '.join(map(str, before))} "
                         f"(every arm needs the same seeds for the paired comparison)")
    cold = None if args.into else build_baseline(project, env)
    names = queue(project, env, arms, args.seeds)
    names = earlier | names
    (scratch / "arms.json").write_text(json.dumps(names, indent=1) + "\n")  # before the wait: --into resumes from it
    wall = run_queue(project, env, list(names), args.jobs)  # with --into, earlier experiments still queued too
    runs = collect(project, env, names, args.student or sorted(params.students)[0])
    (scratch / "runs.json").write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    print(f"{'' if cold is None else f'cold baseline build {cold:.0f} s; '}{len(names) - len(earlier)} experiments "
          f"{wall:.0f} s (--jobs {args.jobs}) on {machine()}; scratch {scratch} (results.json: persyn report --strategies)\n")
    reference = args.reference or next(iter(names.values()))
    command = " ".join(["python bench/strategies.py", *sys.argv[1:]])
    rows, shifted = comparison(runs, reference, extra=tuple(args.show))
    write_results(scratch / "results.json", results(runs, rows, reference, command, shifted))
    print(table(runs, rows, shifted, reference, tuple(args.show)))
    print(power_note(runs, reference))


if __name__ == "__main__":
    main()
