"""Stage fit_router: rewards → preference pairs → Bradley–Terry head measured on held-out S, refitted on all
of S (router.refit_on_all) → data/router/, metrics/router.json."""

from persyn import config, io, router
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    teachers = sorted(params.teachers)
    scores = [r for t in teachers for r in io.read_parquet(f"data/scores/{t}.parquet", "score")]
    embeddings = io.read_embeddings("data/embeddings.parquet")
    fitted = router.fit(scores, embeddings, teachers, params.router)
    with io.atomic_directory("data/router") as out:
        router.save(fitted, out, params.router, len(next(iter(embeddings.values()))))
    io.write_json("metrics/router.json", fitted.metrics, "router_metrics")


if __name__ == "__main__":
    main()
