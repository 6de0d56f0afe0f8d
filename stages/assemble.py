"""Stage assemble@S: student S's routed answers (and the fallback's) → layout.dataset(S) (HF-loadable parquet
+ card), layout.metrics(S, "dataset"). Under route.strategy = "oracle" every answer is scored here, the best
by r is kept, and the scores go to layout.oracle_scores(S, T) (empty under other strategies), which names
their request-cache keys."""

import argparse
from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import budget, card, dataset, fallback, rewards
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("student")
    student = parser.parse_args().student
    params = config.load().for_student(student)
    generated_file = layout.generated(student, "{teacher}")
    teachers = sorted(p.stem for p in Path(layout.routes_dir(student)).glob("*.parquet"))
    routes = {t: [r["id"] for r in io.read_parquet(layout.routes(student, t), "route")] for t in teachers}
    generated = {t: io.read_parquet(generated_file.format(teacher=t), "generation") for t in teachers}
    prompts = io.read_parquet(layout.PROMPTS, "prompt")
    by_id = {p["id"]: p for p in prompts}
    extra = io.read_parquet(layout.fallback(student), "fallback_answer")
    oracle = params.route.strategy == "oracle"
    scored: dict[str, list[dict]] = {t: [] for t in teachers}  # the oracle's scores of every answer
    if oracle:
        with RequestCache() as cache:
            scored = {t: rewards.score_answers(params, t, generated[t], by_id, cache, generated_file.format(teacher=t),
                                               layout.PROMPTS) for t in teachers}
    with io.atomic_directory(layout.oracle(student)) as out:
        for teacher, rows in scored.items():
            io.write_parquet(out / Path(layout.oracle_scores(student, teacher)).name, rows, "score")
    scores = [r for t in teachers
              for r in (scored[t] if oracle else io.read_parquet(layout.scores(student, t), "score"))]
    records = dataset.assemble(prompts, routes, generated, scores, params.router, params.assemble.drop_truncated,
                               extra, params.assemble.unverified, attempts=params.route.fallback > 0,
                               source=generated_file)
    summary = dataset.metrics(records, routes, prompts, generated)
    if params.route.fallback:
        order = {r["id"]: r["teachers"] for r in io.read_parquet(layout.route_order(student), "route_order")}
        primary = {} if oracle else fallback.primary_answers(order, generated, generated_file)
        summary["fallback"] = fallback.metrics(primary, extra, by_id, records,
                                               params.route.fallback, not oracle, teachers)
    planned = io.read_json(layout.metrics(student, "route"), "route_metrics")["budget"]
    if planned:  # before anything is written: a budget in seconds reads the answers' times from the cache
        with RequestCache() as cache:
            summary["budget"] = budget.outcome(planned, [a for t in teachers for a in generated[t]], extra, by_id,
                                               records, cache)
    text = card.build(params, dataset.release_name(params.assemble.name, student), summary, card.teacher_models(records))
    with io.atomic_directory(layout.dataset(student)) as out:
        dataset.write(records, out, text, params.assemble.shard_size)
    io.write_json(layout.metrics(student, "dataset"), summary, "dataset_metrics")
    io.write_csv(layout.plot(student, "teacher_shares"),
                 [{"teacher": t, "share": v["share"]} for t, v in summary["teachers"].items()])


if __name__ == "__main__":
    main()
