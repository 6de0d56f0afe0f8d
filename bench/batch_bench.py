"""Benchmark: the batch size of each model call a build makes, on the embedded default's own prompts.

Per batch size, in one process: every teacher answering the router subset S (its own prompts, greedy,
length-sorted as the request cache sends them), the untrained student answering the eval prompts (what
the evaluate stage does, twice per build) and the student scoring the first teacher's answers (the score
stages). Prints seconds, the ratio to batch 16 and the share of answers identical to batch 16's (an
int8 model's answers can depend on the batch they are computed in; float32 ones do not). This is how
generation.batch_size, eval.batch_size and students.*.batch_size of params.toml were chosen. With
--static, instead: each of those generation calls at the params' batch size with CTranslate2's static
prompt (the tokens every prompt of a batch shares, computed once) against without it, side by side.

    python bench/batch_bench.py [--params params.toml] [--engine ctranslate2] [--sizes 8,16,32,64] [--static]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from persyn import engines
from persyn.engines import ctranslate2
from persyn.core.models import resolve
from persyn.engines import GenerationRequest, Sampling, ScoreRequest
from persyn.params import config
from persyn.pipeline import prompts
from persyn.pipeline.synthesis import teacher_payloads

BASE = 16


def by_length(payloads: list[Any]) -> list[int]:
    """Positions in the order the request cache sends uncached requests: shortest payload first."""
    return sorted(range(len(payloads)), key=lambda i: len(str(payloads[i])))


def sweep(label: str, sizes: list[int], load: Callable[[int], Any], call: Callable[[Any], list[Any]]) -> list[Any]:
    """Print one table row, seconds per batch size (a fresh engine each); return batch 16's outputs."""
    seconds, outputs = {}, {}
    for size in sizes:
        engine = load(size)
        call_start = time.perf_counter()
        outputs[size] = call(engine)
        seconds[size] = time.perf_counter() - call_start
        engine.close()
    base = outputs.get(BASE, outputs[sizes[0]])
    base_seconds = seconds.get(BASE, seconds[sizes[0]])
    cells = [f"{seconds[s]:.1f} ({base_seconds / seconds[s]:.2f}x, {sum(a == b for a, b in zip(outputs[s], base))}"
             f"/{len(base)})" for s in sizes]
    print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return base


def static_row(label: str, load: Callable[[], Any], call: Callable[[Any], list[str]]) -> None:
    """Seconds without and with the shared prefix as CTranslate2's static prompt, and identical answers."""
    seconds, outputs = {}, {}
    for name, least in (("without", 10**9), ("with", ctranslate2.STATIC_PROMPT)):
        ctranslate2.STATIC_PROMPT = least  # shared_prefix reads it per batch
        engine = load()
        start = time.perf_counter()
        outputs[name] = call(engine)
        seconds[name] = time.perf_counter() - start
        engine.close()
    same = sum(a == b for a, b in zip(outputs["without"], outputs["with"]))
    print(f"| {label} | {seconds['without']:.1f} | {seconds['with']:.1f} | {seconds['without'] / seconds['with']:.2f}x "
          f"| {same}/{len(outputs['with'])} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.toml")
    parser.add_argument("--engine", default="ctranslate2")
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--static", action="store_true", help="the static prompt on and off at the params' batch sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    params = config.load(args.params)
    built = prompts.build(params.prompts)
    subset = [p for p in built if p["split"] == "router"]
    evaluated = [p for p in built if p["split"] in ("eval", "eval_shifted")]
    if args.static:
        print(f"engine ctranslate2 at the params' batch sizes; S: {len(subset)} prompts, eval: {len(evaluated)} prompts\n")
        print("| call | seconds without | seconds with | speed | answers identical |\n|---|---|---|---|---|")
    else:
        print(f"engine {args.engine}; S: {len(subset)} prompts, eval: {len(evaluated)} prompts; each cell: seconds "
              f"(speed vs batch {BASE}, answers identical to batch {BASE}'s)\n")
        print("| call | " + " | ".join(f"batch {s}" for s in sizes) + " |\n|---|" + "---|" * len(sizes))
    pairs: list[ScoreRequest] = []
    for name, teacher in sorted(params.teachers.items()):
        model, sampling = resolve(teacher.model), teacher.sampling
        payloads = teacher_payloads(teacher, model, [p["messages"] for p in subset])
        order = by_length(payloads)
        requests = [GenerationRequest(messages=payloads[i].get("messages"), text=payloads[i].get("text")) for i in order]
        greedy = Sampling(0.0, 1.0, sampling.max_tokens, sampling.stop)

        def answer(engine: Any) -> list[str]:
            engine.generate(requests[:1], Sampling(0.0, 1.0, 2, ()))  # warm-up
            return [c.text for c in engine.generate(requests, greedy)]

        if args.static:
            static_row(f"teacher {name} on S", lambda: engines.load("ctranslate2", model, sampling.device,
                                                                    sampling.batch_size), answer)
            continue
        answered = sweep(f"teacher {name} on S", sizes,
                         lambda size: engines.load(args.engine, model, sampling.device, size), answer)
        if not pairs:  # the student scores the first teacher's answers
            pairs = [ScoreRequest(subset[i]["messages"], text) for i, text in zip(order, answered)]
    student = params.student
    model = resolve(student.model, student.chat_template)
    asks = [GenerationRequest(messages=evaluated[i]["messages"]) for i in by_length([p["messages"] for p in evaluated])]
    greedy = Sampling(0.0, 1.0, params.eval.max_tokens, ())

    def evaluate(engine: Any) -> list[str]:
        engine.generate(asks[:1], Sampling(0.0, 1.0, 2, ()))
        return [c.text for c in engine.generate(asks, greedy)]

    def score(engine: Any) -> list[float]:
        engine.loglikelihood(pairs[:1])
        return [round(s.logprob, 6) for s in engine.loglikelihood(pairs)]

    if args.static:
        static_row("untrained student on eval", lambda: engines.load("ctranslate2", model, student.device,
                                                                     params.eval.batch_size), evaluate)
        return
    sweep("untrained student on eval", sizes, lambda size: engines.load(args.engine, model, student.device, size), evaluate)
    sweep("student scores a teacher's S answers", sizes,
          lambda size: engines.load(args.engine, model, student.device, size, student.max_length), score)


if __name__ == "__main__":
    main()
