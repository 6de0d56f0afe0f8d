"""Stage sharing: how many teacher generations the students shared → metrics/sharing.json (this build's
generations against one build per student)."""

from pathlib import Path

from persyn import config, io, sharing
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    routes = {s: {p.stem: {r["id"] for r in io.read_parquet(p, "route")}
                  for p in sorted(Path(f"data/routes/{s}").glob("*.parquet"))} for s in params.students}
    splits = {p["id"]: p["split"] for p in io.read_parquet("data/prompts.parquet", "prompt")}
    io.write_json("metrics/sharing.json", sharing.summary(routes, splits, sorted(params.teachers)), "sharing_metrics")


if __name__ == "__main__":
    main()
