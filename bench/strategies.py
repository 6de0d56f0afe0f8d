"""Does PerSyn beat the strongest teacher where it should? Every arm over independent draws.

Answers the profile's prompts outside its eval split (U) once with every teacher and scores them
once (request cache), then for each draw d (its own S_d and P_d out of U, router.seed = train.seed =
d) builds every arm's dataset with the product's routing and assembly code, trains the student and
answers the fixed eval set and the transfer set (persyn/science/compare.py). Writes OUT/results.json
(schemas/strategy_results.schema.json, checked before it is written; `persyn report --strategies`
draws it) and prints the table (persyn/science/comparison.py).

    python bench/strategies.py --params examples/reasoning-gym/params.toml --out runs/comparison
    python bench/strategies.py ... --arms persyn strongest gold --draws 2      # a quick look
    python bench/strategies.py ... --prepare      # answer and score U only, e.g. first on a GPU machine

Resumable: each (arm, draw) result is kept in OUT/runs/ under a fingerprint of what decides it (the
params file, the transfer file, the design, the arm, the draw); a run started again skips those it has.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from persyn.core import io
from persyn.params import config
from persyn.science import compare, comparison
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import PersynError, guarded

log = logging.getLogger("persyn.bench.strategies")
TRANSFER = Path("examples/reasoning-gym/transfer.toml")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("examples/reasoning-gym/params.toml"))
    parser.add_argument("--student", help="the student to compare (default: the profile's only one)")
    parser.add_argument("--out", type=Path, default=Path("runs/comparison"))
    parser.add_argument("--arms", nargs="+", default=list(compare.ARMS), choices=list(compare.ARMS))
    parser.add_argument("--universe", type=int, default=640, help="prompts.count for the comparison: U plus eval")
    parser.add_argument("--eval-size", type=int, default=120, help="prompts.eval_size: the fixed eval set")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--router-size", type=int, default=120, help="|S_d|")
    parser.add_argument("--pool-size", type=int, default=120, help="|P_d|")
    parser.add_argument("--seed", type=int, default=0, help="seeds the draws of S_d and P_d out of U")
    parser.add_argument("--margin", type=float, default=0.03, help="TOST equivalence margin, stated before the run")
    parser.add_argument("--transfer", type=Path, default=TRANSFER, help="TOML: count, seed and tasks never trained on")
    parser.add_argument("--prepare", action="store_true", help="answer and score U, then stop")
    return parser.parse_args()


def fingerprint(args: argparse.Namespace, arm: str, draw: int) -> str:
    """What decides one (arm, draw) result: change any of it and the result is computed again."""
    decided = {"params": args.params.read_text(), "transfer": args.transfer.read_text(), "arm": arm, "draw": draw,
               "design": [args.universe, args.eval_size, args.router_size, args.pool_size, args.seed]}
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()


def router_inputs(params: config.Params, prompts: list[dict]) -> dict:
    """What the router reads per prompt id: the text under head lm, else the embedding."""
    if params.router.head == "lm":
        from persyn.pipeline import lm_router
        return {p["id"]: lm_router.prompt_text(p) for p in prompts}
    from persyn.pipeline import embed
    vectors, _ = embed.encode([p["messages"][0]["content"] for p in prompts], params.embed)
    return dict(zip([p["id"] for p in prompts], vectors))


def transfer_spec(path: Path) -> dict:
    """The transfer file, each key checked before any model loads: one error naming the file and the key."""
    spec = config.read(path)  # a missing file or bad TOML is one PersynError naming it
    for key, kind in (("count", int), ("seed", int), ("tasks", list)):
        if not isinstance(spec.get(key), kind):
            raise PersynError(f"{path}: field '{key}': expected {kind.__name__}, got {spec.get(key)!r:.40}")
    return spec


def saved(path: Path, key: str) -> dict | None:
    """A kept result, if it was computed from the same inputs."""
    if not path.exists():
        return None
    found = io.read_json(path)
    return found if found.get("fingerprint") == key else None


@guarded
def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    args = arguments()
    started = time.monotonic()
    loaded = config.load(args.params)
    params = loaded.for_student(args.student or next(iter(sorted(loaded.students))))
    params = dataclasses.replace(params, prompts=dataclasses.replace(params.prompts, count=args.universe,
                                                                     eval_size=args.eval_size))
    universe, evals = compare.universe(params)
    spec = transfer_spec(args.transfer)
    far = compare.transfer(spec["tasks"], spec["count"], spec["seed"], {p["id"] for p in universe + evals})
    draws = compare.make_draws(universe, args.draws, args.router_size, args.pool_size, args.seed)
    log.info("U %d prompts, eval %d, transfer %d; %d draws of |S| %d and |P| %d; arms %s", len(universe), len(evals),
             len(far), len(draws), args.router_size, args.pool_size, ", ".join(args.arms))
    runs_dir = args.out / "runs"
    with RequestCache() as cache:
        answers = compare.answer_all(params, universe, cache)
        scores = compare.score_all(params, universe, answers, cache)
        if args.prepare:
            log.info("U answered and scored in %.0f s; stopping (--prepare)", time.monotonic() - started)
            return
        inputs = router_inputs(params, universe)
        floor = compare.untrained_scores(params, evals + far, cache)
        runs = {}
        todo = [(a, d) for d in draws for a in args.arms]
        for number, (arm, draw) in enumerate(todo, 1):
            key, path = fingerprint(args, arm, draw.index), runs_dir / f"{arm}@{draw.index}.json"
            found = saved(path, key)
            if found is None:
                began = time.monotonic()
                trained = {a: compare.fit_router(params, draw, alpha, compare.subset_scores(scores, draw), inputs)
                           for a, alpha in compare.ROUTER_ARMS.items() if a == arm}
                records, facts = compare.build(arm, params, draw, universe, answers, scores, trained, inputs)
                log.info("[%d/%d] draw %d, arm %s: training on %d records", number, len(todo), draw.index, arm, len(records))
                values, summary = compare.train_and_evaluate(params, records, draw, evals + far, cache, args.out / "work")
                found = {"fingerprint": key, "arm": arm, "draw": draw.index, "facts": facts,
                         "eval_ids": [p["id"] for p in evals + far],
                         "train": {k: summary.get(k) for k in ("steps", "final_loss")},
                         "seconds": round(time.monotonic() - began, 1),
                         "eval": values[: len(evals)], "transfer": values[len(evals):]}
                io.write_json(path, found)
            if found["eval_ids"] != [p["id"] for p in evals + far]:
                raise SystemExit(f"{path}: evaluated on other prompts than this run's eval set")
            runs[(arm, draw.index)] = found
            log.info("[%d/%d] draw %d, arm %s: eval %.3f, transfer %.3f (%.0f min so far)", number, len(todo), draw.index,
                     arm, mean(found["eval"]), mean(found["transfer"]), (time.monotonic() - started) / 60)
    design = {"draws": len(draws), "router_size": args.router_size, "pool_size": args.pool_size, "universe": len(universe),
              "margin": args.margin, "alpha": 0.05, "teachers": sorted(params.teachers),
              "transfer_families": sorted({p["family"] for p in far}),
              "transfer_left_out": sorted({p["family"] for p in far} - {p["family"] for p in universe}),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "minutes": round((time.monotonic() - started) / 60, 1),
              "run_minutes": round(sum(r.get("seconds", 0.0) for r in runs.values()) / 60, 1)}  # over every resumption
    results = comparison.document(runs, args.arms, [d.index for d in draws],
                                  {"eval": floor[: len(evals)], "transfer": floor[len(evals):]}, design,
                                  "python bench/strategies.py " + " ".join(sys.argv[1:]))
    comparison.write(args.out / "results.json", results)
    print(comparison.markdown(results))


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


if __name__ == "__main__":
    main()
