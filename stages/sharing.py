"""Stage sharing: how many teacher generations the students shared → layout.SHARING_METRICS (this build's
generations against one build per student)."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import sharing
from persyn.core.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    routes = {s: {p.stem: {r["id"] for r in io.read_parquet(p, "route")}
                  for p in sorted(Path(layout.routes_dir(s)).glob("*.parquet"))} for s in params.students}
    splits = {p["id"]: p["split"] for p in io.read_parquet(layout.PROMPTS, "prompt")}
    io.write_json(layout.SHARING_METRICS, sharing.summary(routes, splits, sorted(params.teachers)), "sharing_metrics")


if __name__ == "__main__":
    main()
