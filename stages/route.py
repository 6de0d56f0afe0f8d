"""Stage route: every router/pool prompt to its argmax teacher → data/routes/T.parquet (ids only)."""

from pathlib import Path

from persyn import config, io, route, router
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    trained, _ = router.load(Path("data/router"))
    prompts = io.read_parquet("data/prompts.parquet", "prompt")
    embeddings = io.read_embeddings()
    assignment = route.assign(params.route.strategy, prompts, trained, embeddings)
    with io.atomic_directory("data/routes") as out:
        for teacher, ids in assignment.items():
            io.write_parquet(out / f"{teacher}.parquet", [{"id": i} for i in ids], "route")


if __name__ == "__main__":
    main()
