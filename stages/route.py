"""Stage route@S: every router/pool prompt to its teacher(s) for student S by route.strategy (within
route.budget and the teachers' caps) → layout.routes(S, T) (ids only), layout.route_order(S) (whom the
fallback asks next), layout.metrics(S, "route") (shares; the budget's plan)."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import route
from persyn.core.errors import guarded


@guarded
def main() -> None:
    student = config.stage_arguments(__doc__, "student").student
    params = config.load().for_student(student)
    routing = route.from_artifacts(params, student)
    with io.atomic_directory(layout.routes_dir(student)) as out:
        for teacher, ids in routing.assignment.items():
            io.write_parquet(out / Path(layout.routes(student, teacher)).name, [{"id": i} for i in ids], "route")
    io.write_parquet(layout.route_order(student), [{"id": i, "teachers": t} for i, t in sorted(routing.order.items())],
                     "route_order")
    io.write_json(layout.metrics(student, "route"), routing.report, "route_metrics")


if __name__ == "__main__":
    main()
