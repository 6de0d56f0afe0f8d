"""The Python half of bench/gpu_check.sh: tiny models, params, the comparisons and the one table.

    python bench/gpu_check.py models DIR                      tiny models vLLM loads in float32
    python bench/gpu_check.py project DIR ENGINE MODELS       a git + DVC copy of this pipeline, every role on ENGINE
                              [--device cuda]
    python bench/gpu_check.py compare VLLM TRANSFORMERS       greedy answers equal, learnability and reward within 1e-3
    python bench/gpu_check.py engines MODELS [--device cuda]  transformers (bf16, learnability, training), CTranslate2
    python bench/gpu_check.py table RESULTS                   the rows every step appended, as one table

Every check appends rows "check, ok|FAILED, seconds, detail" to --results (a TSV file), so one
failure is a row, not the end of the run.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TOLERANCE = 1e-3
PROMPTS = [[{"role": "user", "content": f"Ava has {n} coins and buys {n + 4} more. How many coins?"}] for n in range(8)]
ANSWERS = [f"{n} + {n + 4} = {2 * n + 4}. The answer is {2 * n + 4}." for n in range(8)]


def build_models(directory: Path) -> dict[str, Path]:
    from persyn.testing import tiny  # models built on the spot

    return {"student": tiny.causal_lm(directory / "student", seed=0, vllm=True),
            "teacher_a": tiny.causal_lm(directory / "teacher_a", seed=1, vllm=True),
            "teacher_b": tiny.causal_lm(directory / "teacher_b", seed=2, vllm=True),
            "reward": tiny.reward_model(directory / "reward", vllm=True),
            "encoder": tiny.encoder(directory / "encoder")}


def engine_table(engine: str, device: str) -> str:
    """Every model role's engine, device and options: vLLM and transformers both in float32."""
    options = ('{ dtype = "float32", gpu_memory_utilization = 0.25, enforce_eager = true, max_model_len = 512 }'
               if engine == "vllm" else '{ dtype = "float32" }')
    return f'engine = "{engine}"\ndevice = "{device}"\nengine_options = {options}'


def params_toml(models: Path, engine: str, device: str = "cuda") -> str:
    roles = engine_table(engine, device)
    return f"""
[prompts]
source = "builtin:arithmetic"
count = 28
seed = 0
router_size = 10
eval_size = 4

[embed]
model = "local:{models / 'encoder'}"
batch_size = 8

[generation]
max_tokens = 12
batch_size = 4
{roles}

[teachers.a]
model = "local:{models / 'teacher_a'}"

[teachers.b]
model = "local:{models / 'teacher_b'}"
system_prompt = "Answer briefly."

[students.student]
model = "local:{models / 'student'}"
batch_size = 4
max_length = 256
{roles}

[quality]
kind = "reward_model"
reward_model = "local:{models / 'reward'}"
max_length = 256
{roles}

[router]
alpha = 0.4
normalisation = "zscore"
tie_margin = 0.05
epochs = 50
validation_fraction = 0.3

[route]
strategy = "persyn"

[assemble]
name = "gpu-check"
shard_size = 8

[train]
epochs = 1
batch_size = 8
max_length = 128
lr = 0.001

[eval]
max_tokens = 8
batch_size = 4
"""


def make_project(directory: Path, engine: str, models: Path, device: str) -> None:
    from persyn.testing.dvcproject import make_project as copy_pipeline  # a git + DVC copy of this pipeline

    copy_pipeline(directory, directory.parent / f"{directory.name}-cache", params_toml(models, engine, device))


def answers_and_scores(project: Path) -> dict[tuple[str, str], tuple[str, float, float]]:
    """(teacher, prompt id) -> (router-subset answer, learnability, reward) from the sample and score stages."""
    import polars as pl

    from persyn.core import layout

    rows = {}
    for sample in sorted((project / layout.SAMPLE).glob("*.parquet")):
        answers = {r["id"]: r["response"] for r in pl.read_parquet(sample).to_dicts()}
        for score in pl.read_parquet(project / layout.scores("student", sample.stem)).to_dicts():
            rows[(sample.stem, score["id"])] = (answers[score["id"]], score["learnability"], score["quality"])
    return rows


def compare(first: Path, second: Path) -> list[tuple[str, bool, float, str]]:
    """Greedy answers equal; learnability and raw reward within TOLERANCE wherever the answers are."""
    a, b = answers_and_scores(first), answers_and_scores(second)
    same = [key for key in a if key in b and a[key][0] == b[key][0]]
    rows = [("greedy answers equal", bool(a) and len(same) == len(a) == len(b), 0.0,
             f"{len(same)}/{len(a)} router-subset answers identical")]
    for name, column in (("learnability", 1), ("reward (raw)", 2)):
        gap = max((abs(a[key][column] - b[key][column]) for key in same), default=math.inf)
        rows.append((f"{name} within {TOLERANCE:g}", gap <= TOLERANCE, 0.0, f"max |diff| {gap:.2e} over {len(same)} answers"))
    return rows


def timed(check: str, probe: Callable[[], tuple[bool, str]]) -> tuple[str, bool, float, str]:
    start = time.perf_counter()
    try:
        ok, detail = probe()
    except Exception as error:  # noqa: BLE001 - each check is reported as a row, whatever failed
        ok, detail = False, f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return check, ok, time.perf_counter() - start, detail


def engine_checks(models: dict[str, Path], device: str) -> list[tuple[str, bool, float, str]]:
    """The transformers engine on `device` against itself on the CPU; training; CTranslate2 if importable."""
    from persyn import engines
    from persyn.engines import GenerationRequest, Sampling, ScoreRequest
    from persyn.core.models import resolve

    student, reward = resolve(f"local:{models['student']}"), resolve(f"local:{models['reward']}")
    requests = [GenerationRequest(messages=m) for m in PROMPTS]
    scored = [ScoreRequest(m, a) for m, a in zip(PROMPTS, ANSWERS)]

    def loglikelihood(where: str, dtype: str) -> list[float]:
        engine = engines.load("transformers", student, where, batch_size=4, options={"dtype": dtype})
        try:
            return engine.loglikelihood(scored)
        finally:
            engine.close()

    def bf16_generation() -> tuple[bool, str]:
        engine = engines.load("transformers", student, device, batch_size=8, options={"dtype": "bfloat16"})
        try:
            start = time.perf_counter()
            first = engine.generate(requests, Sampling(max_tokens=16))
            seconds = time.perf_counter() - start
            again = engine.generate(requests, Sampling(max_tokens=16))
        finally:
            engine.close()
        return first == again and all(first), f"{len(first)} greedy answers, repeatable; {seconds:.2f} s; {first[0][:30]!r}"

    def learnability() -> tuple[bool, str]:
        here, cpu = loglikelihood(device, "float32"), loglikelihood("cpu", "float32")
        gap = max(abs(x - y) for x, y in zip(here, cpu))
        return gap <= TOLERANCE, f"float32 {device} vs cpu: max |diff| {gap:.2e} over {len(here)}"

    def learnability_bf16() -> tuple[bool, str]:
        gap = max(abs(x - y) for x, y in zip(loglikelihood(device, "bfloat16"), loglikelihood(device, "float32")))
        return gap < 0.1, f"bfloat16 vs float32 on {device}: max |diff| {gap:.3f} (bound 0.1)"

    def reward_scores() -> tuple[bool, str]:
        values = {}
        for where in (device, "cpu"):
            scorer = engines.load_reward("transformers", reward, where, 256, {"dtype": "float32"})
            values[where] = scorer.score(list(zip(PROMPTS, ANSWERS)))
            scorer.close()
        gap = max(abs(x - y) for x, y in zip(values[device], values["cpu"]))
        return gap <= TOLERANCE, f"raw score float32 {device} vs cpu: max |diff| {gap:.2e}"

    def training() -> tuple[bool, str]:
        from persyn.pipeline import train
        from persyn.params.config import StudentConfig, TrainConfig

        records = [{"messages": m + [{"role": "assistant", "content": a}]} for m, a in zip(PROMPTS, ANSWERS)] * 2
        with tempfile.TemporaryDirectory(prefix="persyn-gpu-check-") as out:
            summary, _ = train.train(records, StudentConfig(model=f"local:{models['student']}", device=device),
                                     TrainConfig(epochs=2, batch_size=4, lr=1e-3, max_length=128), Path(out),
                                     "gpu check records")
        ok = math.isfinite(summary["final_loss"]) and summary["final_loss"] < summary["first_loss"]
        return ok, f"{summary['steps']} steps, loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}"

    rows = [timed(f"transformers bf16 generation ({device})", bf16_generation),
            timed(f"transformers learnability ({device})", learnability),
            timed(f"transformers learnability bf16 ({device})", learnability_bf16),
            timed(f"transformers reward model ({device})", reward_scores),
            timed(f"training ({device})", training)]
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return rows + [("ctranslate2", True, 0.0, "skipped: not installed")]
    return rows + [timed(f"ctranslate2 generation ({device})", lambda: ctranslate2_check(models["student"], device))]


def ctranslate2_check(model: Path, device: str) -> tuple[bool, str]:
    """CTranslate2 float32 greedy answers on `device` against the transformers engine's on the CPU."""
    import ctranslate2
    from transformers import AutoTokenizer

    from persyn import engines
    from persyn.core.chat import chat_ids
    from persyn.engines import GenerationRequest, Sampling
    from persyn.core.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(model)
    reference = engines.load("transformers", resolve(f"local:{model}"), "cpu", batch_size=8)
    expected = reference.generate([GenerationRequest(messages=m) for m in PROMPTS], Sampling(max_tokens=16))
    reference.close()
    with tempfile.TemporaryDirectory(prefix="persyn-ct2-") as out:
        ctranslate2.converters.TransformersConverter(str(model)).convert(out, quantization="float32", force=True)
        generator = ctranslate2.Generator(out, device=device, compute_type="float32")
        tokens = [tokenizer.convert_ids_to_tokens(chat_ids(tokenizer, m, True, str(model))) for m in PROMPTS]
        results = generator.generate_batch(tokens, max_length=16, sampling_topk=1, include_prompt_in_result=False,
                                           end_token=[tokenizer.eos_token])
    answers = [tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
    same = sum(a == b for a, b in zip(answers, expected))
    return all(answers), f"{same}/{len(answers)} greedy answers equal transformers float32 on cpu"


def append(results: Path, rows: list[tuple[str, bool, float, str]]) -> bool:
    with results.open("a") as out:
        for check, ok, seconds, detail in rows:
            out.write(f"{check}\t{'ok' if ok else 'FAILED'}\t{seconds:.1f}\t{detail.replace(chr(9), ' ')}\n")
    return all(ok for _, ok, _, _ in rows)


def table(results: Path) -> str:
    rows = [line.split("\t") for line in results.read_text().splitlines() if line.strip()]
    width = max([len("check")] + [len(r[0]) for r in rows])
    lines = [f"{'check':<{width}}  result  seconds  detail", f"{'-' * width}  ------  -------  ------"]
    lines += [f"{check:<{width}}  {ok:<6}  {float(seconds):>7.1f}  {detail}" for check, ok, seconds, detail in rows]
    failed = sum(r[1] != "ok" for r in rows)
    return "\n".join(lines + [f"{len(rows) - failed}/{len(rows)} checks passed"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models").add_argument("directory", type=Path)
    project = commands.add_parser("project")
    project.add_argument("directory", type=Path)
    project.add_argument("engine", choices=["vllm", "transformers"])
    project.add_argument("models", type=Path)
    project.add_argument("--device", default="cuda", help="cpu: the transformers project, to try the params here")
    pair = commands.add_parser("compare")
    pair.add_argument("first", type=Path)
    pair.add_argument("second", type=Path)
    pair.add_argument("--results", type=Path, required=True)
    checks = commands.add_parser("engines")
    checks.add_argument("models", type=Path)
    checks.add_argument("--device", default="cuda")
    checks.add_argument("--results", type=Path, required=True)
    commands.add_parser("table").add_argument("results", type=Path)
    args = parser.parse_args(argv)
    if args.command == "models":
        build_models(args.directory)
    elif args.command == "project":
        make_project(args.directory, args.engine, args.models, args.device)
    elif args.command == "compare":
        return 0 if append(args.results, compare(args.first, args.second)) else 1
    elif args.command == "engines":
        built = {name: args.models / name for name in ("student", "reward")}
        return 0 if append(args.results, engine_checks(built, args.device)) else 1
    else:
        print(table(args.results))
        return 0 if "FAILED" not in args.results.read_text() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
