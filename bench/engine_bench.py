"""Benchmark: the transformers and ctranslate2 engines side by side, in one process, on the embedded
default's router subset S (the packaged models, the teachers' own prompts).

Per teacher: greedy generation tokens/s per engine and compute type, the ratio to transformers
float32, the share of answers identical to it, and accuracy on S. Then the student's scoring of
every teacher's (transformers) answers: seconds, ratio, Spearman and max |delta| of the mean
log-likelihoods against transformers float32. Then the cost of exact seeded sampling (one freshly
seeded generator per request). Models must be converted already (`persyn models`); the
CTranslate2 conversions are timed once, outside the ratios.

    python bench/engine_bench.py [--params params.toml] [--prompts 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from persyn import engines
from persyn.params import config
from persyn.pipeline import prompts, rewards
from persyn.engines import GenerationRequest, Sampling, ScoreRequest
from persyn.engines.ctranslate2 import converted
from persyn.core.models import resolve
from persyn.pipeline.synthesis import teacher_payloads

GENERATION = [("transformers", {}), ("ctranslate2", {"compute_type": "int8"}),
              ("ctranslate2", {"compute_type": "float32"})]
SCORING = [("transformers", {}), ("ctranslate2", {"score_compute_type": "int8"}),
           ("ctranslate2", {"score_compute_type": "float32"})]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (log-likelihoods are floats: ties do not occur in practice)."""
    return float(np.corrcoef(a.argsort().argsort(), b.argsort().argsort())[0, 1])


def label(engine: str, options: dict[str, str]) -> str:
    return engine if not options else f"{engine} {next(iter(options.values()))}"


def table(header: list[str], rows: list[list[Any]]) -> None:
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    print()


def timed(call: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.toml")
    parser.add_argument("--prompts", type=int, default=32, help="prompts of S to use")
    parser.add_argument("--threads", type=int, default=0, help="CTranslate2 intra_threads (0: all cores)")
    args = parser.parse_args()
    params = config.load(args.params)
    subset = [p for p in prompts.build(params.prompts) if p["split"] == "router"][: args.prompts]
    print(f"S: {len(subset)} prompts, greedy, each teacher's own batch size and max_tokens\n")

    generation_rows, answers = [], {}
    for name, teacher in sorted(params.teachers.items()):
        model = resolve(teacher.model)
        sampling = teacher.sampling
        payloads = teacher_payloads(teacher, model, [p["messages"] for p in subset])
        requests = [GenerationRequest(messages=pl.get("messages"), text=pl.get("text")) for pl in payloads]
        decoding = Sampling(0.0, 1.0, sampling.max_tokens, sampling.stop)
        baseline: list[Any] = []
        for engine, options in GENERATION:
            if engine == "ctranslate2":
                _, seconds = timed(lambda: converted(model, options["compute_type"]))
                print(f"{name}: CTranslate2 {options['compute_type']} conversion {seconds:.1f} s (once; cached)")
            loaded = engines.load(engine, model, sampling.device, sampling.batch_size,
                                  options={**options, **({"intra_threads": args.threads} if engine != "transformers"
                                                         and args.threads else {})})
            loaded.generate(requests[:1], Sampling(0.0, 1.0, 4, ()))  # warm-up
            completions, seconds = timed(lambda: loaded.generate(requests, decoding))
            loaded.close()
            tokens = sum(c.completion_tokens for c in completions)
            texts = [c.text for c in completions]
            if not baseline:
                baseline, base_rate, answers[name] = texts, tokens / seconds, texts
            accuracy = np.mean(rewards.verified_quality(texts, subset, "S"))
            same = np.mean([a == b for a, b in zip(texts, baseline)])
            generation_rows.append([name, label(engine, options), f"{tokens / seconds:.1f}",
                                    f"{tokens / seconds / base_rate:.2f}x", f"{same:.0%}", f"{accuracy:.3f}"])
    table(["teacher", "engine", "tokens/s", "vs transformers", "answers identical", "accuracy on S"], generation_rows)

    student = params.student
    model = resolve(student.model)
    pairs = [ScoreRequest(p["messages"], answer) for t in sorted(answers) for p, answer in zip(subset, answers[t])]
    scoring_rows, reference = [], None
    for engine, options in SCORING:
        loaded = engines.load(engine, model, student.device, student.batch_size, student.max_length, options)
        loaded.loglikelihood(pairs[:1])  # warm-up (and conversion)
        scores, seconds = timed(lambda: loaded.loglikelihood(pairs))
        loaded.close()
        values = np.array([s.logprob for s in scores])
        if reference is None:
            reference, base_seconds = values, seconds
        rho = spearman(values, reference)
        scoring_rows.append([label(engine, options), f"{seconds:.2f}", f"{base_seconds / seconds:.2f}x",
                             f"{rho:.4f}", f"{np.abs(values - reference).max():.4f}"])
    print(f"student scoring: {len(pairs)} answers ({len(answers)} teachers x {len(subset)} prompts), "
          f"batch size {student.batch_size}")
    table(["engine", "seconds", "vs transformers", "Spearman", "max |delta|"], scoring_rows)

    sampled = Sampling(0.7, 0.95, 48, ())
    asks = [GenerationRequest(messages=p["messages"], seed=i) for i, p in enumerate(subset[:8])]
    sampling_rows = []
    for engine, options in GENERATION[:2]:
        loaded = engines.load(engine, model, student.device, student.batch_size, options=options)
        greedy, greedy_seconds = timed(lambda: loaded.generate(asks, Sampling(0.0, 1.0, 48, ())))
        drawn, seconds = timed(lambda: loaded.generate(asks, sampled))
        loaded.close()
        sampling_rows.append([label(engine, options), f"{sum(c.completion_tokens for c in greedy) / greedy_seconds:.1f}",
                              f"{sum(c.completion_tokens for c in drawn) / seconds:.1f}"])
    print(f"seeded sampling on the student ({len(asks)} requests, temperature 0.7): tokens/s")
    table(["engine", "greedy, batched", "sampled, exact per-request seeds"], sampling_rows)


if __name__ == "__main__":
    main()
