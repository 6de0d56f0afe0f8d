"""Stage generate@S-T: teacher T answers only the prompts student S's router sent it; router-subset
answers are reused → data/generated/S/T.parquet and data/generated/S/T.stats.json; this run's
counters → runs/generate@S-T.json. A prompt another student routed to T too is a request-cache hit:
generated once for both."""

import argparse
from pathlib import Path

from persyn import config, io, runner, synthesis
from persyn.cache import RequestCache
from persyn.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("student")
    parser.add_argument("teacher")
    args = parser.parse_args()
    teacher = config.load().for_student(args.student).teacher(args.teacher)
    routed = {r["id"] for r in io.read_parquet(f"data/routes/{args.student}/{teacher.name}.parquet", "route")}
    subset = {r["id"]: r for r in io.read_parquet(f"data/sample/{teacher.name}.parquet", "generation")}
    todo = [p for p in io.read_parquet("data/prompts.parquet", "prompt") if p["id"] in routed and p["id"] not in subset]
    with RequestCache() as cache:
        fresh, stats = synthesis.generate(teacher, todo, cache)
    records = sorted([subset[i] for i in routed if i in subset] + fresh, key=lambda r: r["id"])
    io.write_parquet(f"data/generated/{args.student}/{teacher.name}.parquet", records, "generation")
    io.write_json(f"data/generated/{args.student}/{teacher.name}.stats.json",
                  synthesis.stats_record(teacher.name, len(records), len(records) - len(fresh)),
                  "generation_stats")
    runner.write_run_log(Path(f"runs/generate@{args.student}-{teacher.name}.json"),
                         f"generate@{args.student}-{teacher.name}", stats)


if __name__ == "__main__":
    main()
