"""Stage route@S: every router/pool prompt to its teacher(s) for student S by route.strategy (within
route.budget and the teachers' caps) → data/routes/S/T.parquet (ids only), data/route_order/S.parquet
(whom the fallback asks next), metrics/S/route.json (shares; the budget's plan)."""

import argparse

from persyn import config, io, route
from persyn.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("student")
    student = parser.parse_args().student
    params = config.load().for_student(student)
    routing = route.from_artifacts(params, student)
    with io.atomic_directory(f"data/routes/{student}") as out:
        for teacher, ids in routing.assignment.items():
            io.write_parquet(out / f"{teacher}.parquet", [{"id": i} for i in ids], "route")
    io.write_parquet(f"data/route_order/{student}.parquet", [{"id": i, "teachers": t} for i, t in sorted(routing.order.items())],
                     "route_order")
    io.write_json(f"metrics/{student}/route.json", routing.report, "route_metrics")


if __name__ == "__main__":
    main()
