"""Stage assemble: routed answers (and the fallback's) → data/dataset/ (HF-loadable parquet + card),
metrics/dataset.json. Under route.strategy = "oracle" every answer is scored here, the best by r is kept,
and the scores go to data/oracle/T.parquet (empty under other strategies), which names their request-cache keys."""

from pathlib import Path

from persyn import budget, config, dataset, fallback, io, rewards
from persyn.cache import RequestCache
from persyn.errors import guarded

GENERATED = "data/generated/{teacher}.parquet"
PROMPTS = "data/prompts.parquet"


@guarded
def main() -> None:
    params = config.load()
    teachers = sorted(p.stem for p in Path("data/routes").glob("*.parquet"))
    routes = {t: [r["id"] for r in io.read_parquet(f"data/routes/{t}.parquet", "route")] for t in teachers}
    generated = {t: io.read_parquet(GENERATED.format(teacher=t), "generation") for t in teachers}
    prompts = io.read_parquet(PROMPTS, "prompt")
    by_id = {p["id"]: p for p in prompts}
    extra = io.read_parquet("data/fallback.parquet", "fallback_answer")
    oracle = params.route.strategy == "oracle"
    scored: dict[str, list[dict]] = {t: [] for t in teachers}  # the oracle's scores of every answer
    if oracle:
        with RequestCache() as cache:
            scored = {t: rewards.score_answers(params, t, generated[t], by_id, cache, GENERATED.format(teacher=t),
                                               PROMPTS) for t in teachers}
    with io.atomic_directory("data/oracle") as out:
        for teacher, rows in scored.items():
            io.write_parquet(out / f"{teacher}.parquet", rows, "score")
    scores = [r for t in teachers for r in (scored[t] if oracle else io.read_parquet(f"data/scores/{t}.parquet", "score"))]
    records = dataset.assemble(prompts, routes, generated, scores, params.router, params.assemble.drop_truncated,
                               extra, params.assemble.unverified, attempts=params.route.fallback > 0)
    with io.atomic_directory("data/dataset") as out:
        dataset.write(records, out, params.assemble.name, params.assemble.shard_size)
    summary = dataset.metrics(records, routes, prompts, generated)
    if params.route.fallback:
        order = {r["id"]: r["teachers"] for r in io.read_parquet("data/route_order.parquet", "route_order")}
        primary = {} if oracle else fallback.primary_answers(order, generated, GENERATED)
        summary["fallback"] = fallback.metrics(primary, extra, {i: p["reference"] for i, p in by_id.items()}, records,
                                               params.route.fallback, not oracle, teachers)
    planned = io.read_json("metrics/route.json", "route_metrics")["budget"]
    if planned:
        summary["budget"] = budget.outcome(planned, [a for t in teachers for a in generated[t]], extra, by_id, records)
    io.write_json("metrics/dataset.json", summary, "dataset_metrics")
    io.write_csv("plots/teacher_shares.csv",
                 [{"teacher": t, "share": v["share"]} for t, v in summary["teachers"].items()])


if __name__ == "__main__":
    main()
