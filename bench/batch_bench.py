"""Benchmark: the batch size of each model call a build makes, on the embedded default's own prompts.

Per batch size, in one process: every teacher answering the router subset S (greedy, length-sorted and
in batches of even size as the request cache sends them; --split pool: the pool the generate stages
answer, --count its first N, about what routing sends one teacher), the untrained student answering
the eval prompts (what the evaluate stage does, twice per build) and the student scoring the first
teacher's answers (the score stages). Prints seconds, the ratio to batch 16 and the share of answers
identical to batch 16's (an int8 model's answers can depend on the batch they are computed in; float32
ones do not). This is how generation.batch_size, eval.batch_size and students.*.batch_size of
params.toml were chosen. Instead, each of those calls at the params' batch sizes, CTranslate2 without
and with, side by side:
--static  its static prompt (the tokens every prompt of a batch shares, computed once);
--replicas  two replicas of one thread computing the batch's halves at once, against one of two threads.

    python bench/batch_bench.py [--params params.toml] [--engine ctranslate2] [--sizes 8,16,32,64]
                                [--split router|pool] [--count N] [--static | --replicas]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from persyn import engines
from persyn.engines import ctranslate2
from persyn.core.models import resolve
from persyn.engines import Completion, GenerationRequest, Sampling, ScoreRequest
from persyn.params import config
from persyn.pipeline import prompts
from persyn.pipeline.batching import even_batches
from persyn.pipeline.synthesis import teacher_payloads

BASE = 16


def by_length(payloads: list[Any]) -> list[int]:
    """Positions in the order the request cache sends uncached requests: shortest payload first."""
    return sorted(range(len(payloads)), key=lambda i: len(str(payloads[i])))


def same(outputs: list[Any], others: list[Any]) -> int:
    """How many outputs are identical (an answer's text, a score's value)."""
    return sum(getattr(a, "text", a) == getattr(b, "text", b) for a, b in zip(outputs, others))


def speed(outputs: list[Any], seconds: float) -> str:
    """Generated tokens per second (answers of different lengths take different times), or "-" for scores."""
    tokens = sum(getattr(output, "completion_tokens", 0) for output in outputs)
    return f"{tokens / seconds:.0f}" if tokens else "-"


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
    cells = [f"{seconds[s]:.1f} ({base_seconds / seconds[s]:.2f}x, {same(outputs[s], base)}"
             f"/{len(base)})" for s in sizes]
    print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return base


def static_prompt(on: bool) -> dict[str, int]:
    """No engine options: the shared prefix is used from STATIC_PROMPT tokens on, or never."""
    ctranslate2.STATIC_PROMPT = STATIC_PROMPT if on else 10**9  # shared_prefix reads it per batch
    return {}


def replicas(on: bool) -> dict[str, int]:
    """Two replicas of one thread each, or one of two threads (on two cores)."""
    return {"inter_threads": 2 if on else 1}


STATIC_PROMPT = ctranslate2.STATIC_PROMPT
COMPARED = {"static": static_prompt, "replicas": replicas}


def side_by_side(label: str, variant: Callable[[bool], dict[str, int]], load: Callable[[dict[str, int]], Any],
                 call: Callable[[Any], list[Any]]) -> None:
    """Seconds without and with a variant (engine options it returns), and the outputs identical."""
    seconds, outputs = {}, {}
    for name, on in (("without", False), ("with", True)):
        engine = load(variant(on))
        start = time.perf_counter()
        outputs[name] = call(engine)
        seconds[name] = time.perf_counter() - start
        engine.close()
    rates = [speed(outputs[name], seconds[name]) for name in ("without", "with")]
    print(f"| {label} | {seconds['without']:.1f} | {seconds['with']:.1f} | {seconds['without'] / seconds['with']:.2f}x "
          f"| {rates[0]} | {rates[1]} | {same(outputs['without'], outputs['with'])}/{len(outputs['with'])} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.toml")
    parser.add_argument("--engine", default="ctranslate2")
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--split", default="router", choices=("router", "pool"),
                        help="the prompts the teachers answer: S (the sample stages') or the pool (the generate stages')")
    parser.add_argument("--count", type=int, default=0, help="the first COUNT prompts of the split only (0: all)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--static", action="store_true", help="the static prompt on and off at the params' batch sizes")
    chosen.add_argument("--replicas", action="store_true", help="two replicas against one at the params' batch sizes")
    args = parser.parse_args()
    compared = "static" if args.static else "replicas" if args.replicas else ""
    sizes = [int(s) for s in args.sizes.split(",")]
    params = config.load(args.params)
    built = prompts.build(params.prompts)
    subset = [p for p in built if p["split"] == args.split][:args.count or None]
    where = "S" if args.split == "router" else "the pool"
    evaluated = [p for p in built if p["split"] in ("eval", "eval_shifted")]
    if compared:
        print(f"engine ctranslate2 at the params' batch sizes, {compared}; {where}: {len(subset)} prompts, "
              f"eval: {len(evaluated)} prompts\n")
        print("| call | seconds without | seconds with | speed | tokens/s without | tokens/s with | outputs identical |\n"
              "|---|---|---|---|---|---|---|")
    else:
        print(f"engine {args.engine}; {where}: {len(subset)} prompts, eval: {len(evaluated)} prompts; each cell: seconds "
              f"(speed vs batch {BASE}, answers identical to batch {BASE}'s)\n")
        print("| call | " + " | ".join(f"batch {s}" for s in sizes) + " |\n|---|" + "---|" * len(sizes))
    pairs: list[ScoreRequest] = []
    for name, teacher in sorted(params.teachers.items()):
        model, sampling = resolve(teacher.model), teacher.sampling
        payloads = teacher_payloads(teacher, model, [p["messages"] for p in subset])
        order = by_length(payloads)
        requests = [GenerationRequest(messages=payloads[i].get("messages"), text=payloads[i].get("text")) for i in order]
        greedy = Sampling(0.0, 1.0, sampling.max_tokens, sampling.stop)

        def answer(engine: Any) -> list[Completion]:
            engine.generate(requests[:1], Sampling(0.0, 1.0, 2, ()))  # warm-up
            return [c for batch in even_batches(requests, engine.batch_size) for c in engine.generate(batch, greedy)]

        if compared:
            side_by_side(f"teacher {name} on {where}", COMPARED[compared], lambda options: engines.load(
                "ctranslate2", model, sampling.device, sampling.batch_size, options=options), answer)
            if not pairs:
                engine = engines.load("ctranslate2", model, sampling.device, sampling.batch_size)
                pairs = [ScoreRequest(subset[i]["messages"], c.text) for i, c in zip(order, engine.generate(requests, greedy))]
                engine.close()
            continue
        answered = sweep(f"teacher {name} on {where}", sizes,
                         lambda size: engines.load(args.engine, model, sampling.device, size), answer)
        if not pairs:  # the student scores the first teacher's answers
            pairs = [ScoreRequest(subset[i]["messages"], c.text) for i, c in zip(order, answered)]
    student = params.student
    model = resolve(student.model, student.chat_template)
    asks = [GenerationRequest(messages=evaluated[i]["messages"]) for i in by_length([p["messages"] for p in evaluated])]
    greedy = Sampling(0.0, 1.0, params.eval.max_tokens, ())

    def evaluate(engine: Any) -> list[Completion]:
        engine.generate(asks[:1], Sampling(0.0, 1.0, 2, ()))
        return engine.generate(asks, greedy)

    def score(engine: Any) -> list[float]:
        engine.loglikelihood(pairs[:1])
        return [round(s.logprob, 6) for s in engine.loglikelihood(pairs)]

    if compared:
        side_by_side("untrained student on eval", COMPARED[compared], lambda options: engines.load(
            "ctranslate2", model, student.device, params.eval.batch_size, options=options), evaluate)
        side_by_side("student scores a teacher's S answers", COMPARED[compared], lambda options: engines.load(
            "ctranslate2", model, student.device, student.batch_size, student.max_length, options=options), score)
        return
    sweep("untrained student on eval", sizes, lambda size: engines.load(args.engine, model, student.device, size), evaluate)
    sweep("student scores a teacher's S answers", sizes,
          lambda size: engines.load(args.engine, model, student.device, size, student.max_length), score)


if __name__ == "__main__":
    main()
