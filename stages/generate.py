"""Stage generate@S-T: teacher T answers only the prompts student S's router sent it; router-subset
answers are reused → layout.generated(S, T); this run's counters → layout.run_log("generate@S-T"), not
versioned. A prompt another student routed to T too is a request-cache hit:
generated once for both."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import runner, synthesis
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    args = config.stage_arguments(__doc__, "student", "teacher")
    teacher = config.load().for_student(args.student).teacher(args.teacher)
    routed = {r["id"] for r in io.read_parquet(layout.routes(args.student, teacher.name), "route")}
    subset = {r["id"]: r for r in io.read_parquet(layout.sample(teacher.name), "generation")}
    todo = [p for p in io.read_parquet(layout.PROMPTS, "prompt") if p["id"] in routed and p["id"] not in subset]
    with RequestCache() as cache:
        fresh, stats = synthesis.generate(teacher, todo, cache)
    records = sorted([subset[i] for i in routed if i in subset] + fresh, key=lambda r: r["id"])
    io.write_parquet(layout.generated(args.student, teacher.name), records, "generation")
    stage = f"generate@{args.student}-{teacher.name}"
    runner.write_run_log(Path(layout.run_log(stage)), stage, stats)


if __name__ == "__main__":
    main()
