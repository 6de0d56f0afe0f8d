"""Stage route: every router/pool prompt to its teacher(s) by route.strategy → data/routes/T.parquet (ids only)."""

from pathlib import Path

from persyn import config, io, route, router
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    trained, _ = router.load(Path("data/router"))
    prompts = io.read_parquet("data/prompts.parquet", "prompt")
    scores = [r for t in trained.teachers for r in io.read_parquet(f"data/scores/{t}.parquet", "score")]
    assignment = route.assign(params.route, prompts, trained, io.read_embeddings("data/embeddings.parquet"), scores)
    with io.atomic_directory("data/routes") as out:
        for teacher, ids in assignment.items():
            io.write_parquet(out / f"{teacher}.parquet", [{"id": i} for i in ids], "route")


if __name__ == "__main__":
    main()
