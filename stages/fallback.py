"""Stage fallback@S: student S's routed answers that fail verification are re-asked of the next teachers
in data/route_order/S.parquet, up to route.fallback more, through the request cache → data/fallback/S.parquet
(empty at route.fallback = 0 and under the oracle, whose every teacher answered already)."""

import argparse
import logging

from persyn import config, fallback, io, synthesis
from persyn.cache import RequestCache
from persyn.errors import guarded

log = logging.getLogger("persyn.fallback")


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("student")
    student = parser.parse_args().student
    params = config.load().for_student(student)
    answers: list[dict] = []
    if params.route.fallback and params.route.strategy == "oracle":
        log.info("route.fallback = %d under route.strategy = 'oracle': every teacher answered every prompt already, "
                 "nothing to re-ask", params.route.fallback)
    elif params.route.fallback:
        teachers = sorted(params.teachers)
        generated_file = f"data/generated/{student}/{{teacher}}.parquet"
        order = {r["id"]: r["teachers"] for r in io.read_parquet(f"data/route_order/{student}.parquet", "route_order")}
        generated = {t: io.read_parquet(generated_file.format(teacher=t), "generation") for t in teachers}
        subset = {t: {a["id"]: a for a in io.read_parquet(f"data/sample/{t}.parquet", "generation")} for t in teachers}
        prompts = {p["id"]: p for p in io.read_parquet("data/prompts.parquet", "prompt")}
        with RequestCache() as cache:
            def ask(teacher: str, ids: list[str]) -> list[dict]:
                return synthesis.generate(params.teacher(teacher), [prompts[i] for i in ids], cache)[0]

            primary = fallback.primary_answers(order, generated, generated_file)
            answers = fallback.ask_in_order(params.route.fallback, order, primary,
                                            prompts, subset, ask)
    io.write_parquet(f"data/fallback/{student}.parquet", answers, "fallback_answer")


if __name__ == "__main__":
    main()
