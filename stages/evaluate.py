"""Stage evaluate@S: student S trained and untrained on the eval split and the shifted eval set →
layout.metrics(S, "eval"), layout.predictions(S), layout.plot(S, "accuracy")."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import evaluate
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    name = config.stage_arguments(__doc__, "student").student
    params = config.load().for_student(name)
    prompts = [p for p in io.read_parquet(layout.PROMPTS, "prompt") if p["split"] in evaluate.SPLITS]
    with RequestCache() as cache:
        result = evaluate.run(params, prompts, Path(layout.trained(name)).resolve(), cache, layout.PROMPTS)
    io.write_json(layout.metrics(name, "eval"), result.metrics, "eval_metrics")
    io.write_parquet(layout.predictions(name), result.predictions, "prediction")
    io.write_csv(layout.plot(name, "accuracy"), result.plot)

if __name__ == "__main__":
    main()
