"""Stage assemble@S: student S's routed answers (and the fallback's) → layout.dataset(S) (HF-loadable parquet
+ card), layout.metrics(S, "dataset"). Under route.strategy = "oracle" every answer is scored here, the best
by r is kept, and the scores go to layout.oracle_scores(S, T) (empty under other strategies), which names
their request-cache keys."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import assembly, dataset
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    student = config.stage_arguments(__doc__, "student").student
    params = config.load().for_student(student)
    generated_file = layout.generated(student, "{teacher}")
    teachers = sorted(p.stem for p in Path(layout.routes_dir(student)).glob("*.parquet"))
    given = assembly.Inputs(
        routes={t: [r["id"] for r in io.read_parquet(layout.routes(student, t), "route")] for t in teachers},
        generated={t: io.read_parquet(generated_file.format(teacher=t), "generation") for t in teachers},
        prompts=io.read_parquet(layout.PROMPTS, "prompt"),
        extra=io.read_parquet(layout.fallback(student), "fallback_answer"),
        scores={t: io.read_parquet(layout.scores(student, t), "score") for t in teachers},
        order={r["id"]: r["teachers"] for r in io.read_parquet(layout.route_order(student), "route_order")},
        planned=io.read_json(layout.metrics(student, "route"), "route_metrics")["budget"])
    with RequestCache() as cache:
        built = assembly.assemble(params, student, given, cache, generated_file, layout.PROMPTS)
    with io.atomic_directory(layout.oracle(student)) as out:
        for teacher, rows in built.oracle_scores.items():
            io.write_parquet(out / Path(layout.oracle_scores(student, teacher)).name, rows, "score")
    with io.atomic_directory(layout.dataset(student)) as out:
        dataset.write(built.records, out, built.card, params.assemble.shard_size)
    io.write_json(layout.metrics(student, "dataset"), built.summary, "dataset_metrics")
    io.write_csv(layout.plot(student, "teacher_shares"), built.shares)

if __name__ == "__main__":
    main()
