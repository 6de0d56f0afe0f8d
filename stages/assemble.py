"""Stage assemble: routed answers → data/dataset/ (HF-loadable parquet + card), metrics/dataset.json."""

from pathlib import Path

from persyn import config, dataset, io
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    teachers = sorted(p.stem for p in Path("data/routes").glob("*.parquet"))
    routes = {t: [r["id"] for r in io.read_parquet(f"data/routes/{t}.parquet", "route")] for t in teachers}
    generated = {t: io.read_parquet(f"data/generated/{t}.parquet", "generation") for t in teachers}
    stats = {t: io.read_json(f"data/generated/{t}.stats.json", "generation_stats") for t in teachers}
    scores = [r for t in teachers for r in io.read_parquet(f"data/scores/{t}.parquet", "score")]
    prompts = io.read_parquet("data/prompts.parquet", "prompt")
    records = dataset.assemble(prompts, routes, generated, scores)
    with io.atomic_directory("data/dataset") as out:
        dataset.write(records, out, params.assemble.name, params.assemble.shard_size)
    subset_size = sum(p["split"] == "router" for p in prompts)
    generation = {t: {"generated": s["generated"], "reused": s["reused"]} for t, s in stats.items()}
    io.write_json("metrics/dataset.json", dataset.metrics(records, teachers, subset_size, generation),
                  "dataset_metrics")


if __name__ == "__main__":
    main()
