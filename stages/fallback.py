"""Stage fallback@S: student S's routed answers that fail verification are re-asked of the next teachers
in layout.route_order(S), up to route.fallback more, through the request cache → layout.fallback(S)
(empty at route.fallback = 0 and under the oracle, whose every teacher answered already)."""

import logging

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import fallback, synthesis
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded

log = logging.getLogger("persyn.fallback")


@guarded
def main() -> None:
    student = config.stage_arguments(__doc__, "student").student
    params = config.load().for_student(student)
    answers: list[dict] = []
    if params.route.fallback and params.route.strategy == "oracle":
        log.info("route.fallback = %d under route.strategy = 'oracle': every teacher answered every prompt already, "
                 "nothing to re-ask", params.route.fallback)
    elif params.route.fallback:
        teachers = sorted(params.teachers)
        generated_file = layout.generated(student, "{teacher}")
        order = {r["id"]: r["teachers"] for r in io.read_parquet(layout.route_order(student), "route_order")}
        generated = {t: io.read_parquet(generated_file.format(teacher=t), "generation") for t in teachers}
        subset = {t: {a["id"]: a for a in io.read_parquet(layout.sample(t), "generation")} for t in teachers}
        prompts = {p["id"]: p for p in io.read_parquet(layout.PROMPTS, "prompt")}
        with RequestCache() as cache:
            def ask(teacher: str, ids: list[str]) -> list[dict]:
                return synthesis.generate(params.teacher(teacher), [prompts[i] for i in ids], cache)[0]

            primary = fallback.primary_answers(order, generated, generated_file)
            answers = fallback.ask_in_order(params.route.fallback, order, primary,
                                            prompts, subset, ask)
    io.write_parquet(layout.fallback(student), answers, "fallback_answer")


if __name__ == "__main__":
    main()
