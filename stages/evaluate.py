"""Stage evaluate@S: student S trained and untrained on the eval split and the shifted eval set →
layout.metrics(S, "eval"), layout.predictions(S), layout.plot(S, "accuracy")."""

import argparse
from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import evaluate
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("student")
    name = parser.parse_args().student
    params = config.load().for_student(name)
    prompts = [p for p in io.read_parquet(layout.PROMPTS, "prompt") if p["split"] in evaluate.SPLITS]
    trained_model = Path(layout.trained(name)).resolve()
    checkpoint = f"local:{trained_model}"
    with RequestCache() as cache:
        trained = evaluate.answers(checkpoint, params, prompts, cache)
        untrained = evaluate.answers(params.student.model, params, prompts, cache)
        trained_scores, trained_keys = evaluate.score(params, prompts, trained, cache, layout.PROMPTS)
        untrained_scores, untrained_keys = evaluate.score(params, prompts, untrained, cache, layout.PROMPTS)
    splits = [p["split"] for p in prompts]
    metrics = evaluate.metrics(params.quality.kind, splits, trained_scores, untrained_scores)
    lm_eval = evaluate.lm_eval(str(trained_model), params.eval.lm_eval_tasks, params.eval.lm_eval_limit)
    if lm_eval:
        metrics["lm_eval"] = lm_eval
    io.write_json(layout.metrics(name, "eval"), metrics, "eval_metrics")
    predictions = [{"id": p["id"], "split": p["split"], "trained": t["response"], "untrained": u["response"],
                    "trained_score": ts, "untrained_score": us, "requests": [t["request"], u["request"], *tk, *uk]}
                   for p, t, u, ts, us, tk, uk in zip(prompts, trained, untrained, trained_scores, untrained_scores,
                                                      trained_keys, untrained_keys)]
    io.write_parquet(layout.predictions(name), predictions, "prediction")
    key = evaluate.accuracy_key(params.quality.kind)
    rows = [{"student": which, key: metrics[which][key]} for which in ("untrained", "trained")]
    rows += [{"student": f"{which} (shifted)", key: metrics["eval_shifted"][which][key]}
             for which in ("untrained", "trained") if "eval_shifted" in metrics]
    io.write_csv(layout.plot(name, "accuracy"), rows)


if __name__ == "__main__":
    main()
