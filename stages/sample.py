"""Stage sample@T: teacher T answers every router-subset prompt → data/sample/T.parquet (+ T.stats.json);
this run's counters (generated now, reused, cost) → runs/sample@T.json."""

import argparse
from pathlib import Path

from persyn import config, io, runner, synthesis
from persyn.cache import RequestCache
from persyn.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("teacher")
    teacher = config.load().teacher(parser.parse_args().teacher)
    subset = [p for p in io.read_parquet("data/prompts.parquet", "prompt") if p["split"] == "router"]
    with RequestCache() as cache:
        records, stats = synthesis.generate(teacher, subset, cache)
    io.write_parquet(f"data/sample/{teacher.name}.parquet", records, "generation")
    io.write_json(f"data/sample/{teacher.name}.stats.json",
                  synthesis.stats_record(teacher.name, len(records), 0), "generation_stats")
    runner.write_run_log(Path(f"runs/sample@{teacher.name}.json"), f"sample@{teacher.name}", stats)


if __name__ == "__main__":
    main()
