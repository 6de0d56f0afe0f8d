"""Stage route: every router/pool prompt to its teacher(s) by route.strategy (within route.budget and the
teachers' caps) → data/routes/T.parquet (ids only), data/route_order.parquet (whom the fallback asks
next), metrics/route.json (shares; the budget's plan)."""

from persyn import config, io, route
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    routing = route.from_artifacts(params)
    with io.atomic_directory("data/routes") as out:
        for teacher, ids in routing.assignment.items():
            io.write_parquet(out / f"{teacher}.parquet", [{"id": i} for i in ids], "route")
    io.write_parquet("data/route_order.parquet", [{"id": i, "teachers": t} for i, t in sorted(routing.order.items())],
                     "route_order")
    io.write_json("metrics/route.json", routing.report, "route_metrics")


if __name__ == "__main__":
    main()
