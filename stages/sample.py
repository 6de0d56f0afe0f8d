"""Stage sample@T: teacher T answers every router-subset prompt → layout.sample(T); this run's counters
(generated now, reused, cost) → layout.run_log("sample@T"), not versioned."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import runner, synthesis
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    teacher = config.load().teacher(config.stage_arguments(__doc__, "teacher").teacher)
    subset = [p for p in io.read_parquet(layout.PROMPTS, "prompt") if p["split"] == "router"]
    with RequestCache() as cache:
        records, stats = synthesis.generate(teacher, subset, cache)
    io.write_parquet(layout.sample(teacher.name), records, "generation")
    stage = f"sample@{teacher.name}"
    runner.write_run_log(Path(layout.run_log(stage)), stage, stats)


if __name__ == "__main__":
    main()
