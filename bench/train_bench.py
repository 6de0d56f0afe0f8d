"""Benchmark: the student's training recipes side by side on a build's own dataset, timed and evaluated.

Each recipe fine-tunes the student once on the same records (default: the embedded default's dataset,
data/dataset/<student>, with the [train] settings of params.toml) and is then evaluated like the
evaluate stage (greedy, eval.max_tokens, CTranslate2 float32) on the build's eval prompts plus
`--extra-eval` built-in problems the build never saw, so the accuracy intervals are narrower than a
build's own. Prints seconds, steps/s, final loss, accuracy with its Wilson 95% interval and the paired
difference to the first recipe (bootstrap 95% interval, sign-flip p), then the recipe the default
should take: the fastest whose accuracy is inside the best recipe's interval. Each training runs in a
fresh process, as the train stage does (beside a loaded CTranslate2 model's threads it ran up to 1.4x slower).

Recipes: persyn's loop (transformers Trainer, loss on response tokens, output layer only from the first
response token) in float32 or bfloat16 autocast, with every block trained, the lowest blocks frozen, or
LoRA, in the Trainer's random batches or batches of similar length (train.batching); and TRL's
SFTTrainer with its completion-only loss on the same records (`pip install -e '.[bench]'`; its
assistant_only_loss refuses SmolLM2's chat template, which has no {% generation %} markers).

    python bench/train_bench.py [--student smol] [--recipes f32,bf16,...] [--extra-eval 192]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from persyn.core import io, layout, stats
from persyn.core.models import cache_root, resolve
from persyn.params import config
from persyn.pipeline import dataset, evaluate, prompts, train
from persyn.pipeline.cache import RequestCache


def recipe(precision: str, freeze_layers: int = 0, lora_r: int = 0, batching: str = "shuffle") -> dict[str, Any]:
    """Every setting a recipe varies, set explicitly: none is inherited from params.toml's [train]."""
    return {"precision": precision, "freeze_layers": freeze_layers, "lora_r": lora_r, "batching": batching}


RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "f32": ("float32, all blocks", recipe("float32")),
    "bf16": ("bfloat16, all blocks", recipe("bfloat16")),
    "bf16-length": ("bfloat16, all blocks, batches by length", recipe("bfloat16", batching="length")),
    "f32-length": ("float32, all blocks, batches by length", recipe("float32", batching="length")),
    "f32-freeze10": ("float32, 10 lowest blocks frozen", recipe("float32", freeze_layers=10)),
    "f32-freeze20": ("float32, 20 lowest blocks frozen", recipe("float32", freeze_layers=20)),
    "bf16-freeze20": ("bfloat16, 20 lowest blocks frozen", recipe("bfloat16", freeze_layers=20)),
    "lora16": ("float32, LoRA r=16 (merged)", recipe("float32", lora_r=16)),
    "trl": ("TRL SFTTrainer, completion-only loss, float32, all blocks", recipe("float32")),
}


def trl_train(records: list[dict[str, Any]], student: Any, settings: Any, out: Path) -> dict[str, Any]:
    """TRL's SFTTrainer on the same records, as prompt/completion conversations (its completion-only loss
    is persyn's response-only loss), with the same optimiser settings; saves the model into `out`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model_ref = resolve(student.model, student.chat_template)
    rows = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records])
    with tempfile.TemporaryDirectory(prefix="persyn-trl-") as scratch:
        arguments = SFTConfig(
            output_dir=scratch, completion_only_loss=True, max_length=settings.max_length,
            num_train_epochs=settings.epochs, learning_rate=settings.lr, per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=settings.grad_accum, warmup_steps=train.warmup_steps(len(records), settings),
            weight_decay=settings.weight_decay, lr_scheduler_type="linear", seed=settings.seed, logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=True)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_ref.path), args=arguments,
                             train_dataset=rows, processing_class=AutoTokenizer.from_pretrained(model_ref.path))
        result = trainer.train()
        trainer.save_model(str(out))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"steps": int(result.global_step), "final_loss": float(losses[-1])}


def train_one(key: str, records: list[dict[str, Any]], student: Any, out: Path) -> tuple[float, dict[str, Any]]:
    """Seconds and summary of one recipe's training, the checkpoint saved into `out`."""
    settings = dataclasses.replace(student.train, **RECIPES[key][1])
    start = time.perf_counter()
    if key == "trl":
        summary = trl_train(records, student, settings, out)
    else:
        summary, _ = train.train(records, student, settings, out, "bench records")
    return time.perf_counter() - start, summary


def accuracy(checkpoint: str, params: Any, asked: list[dict[str, Any]], cache: RequestCache) -> np.ndarray:
    """The evaluate stage's own answers and verified scores (persyn.pipeline.evaluate) for a checkpoint spec
    (local: path, or the student's); a bench checkpoint's engine conversion is not kept."""
    answered = evaluate.answers(checkpoint, params, asked, cache)
    scores, _ = evaluate.score(params, asked, answered, cache, "bench eval prompts")
    if checkpoint.startswith("local:"):
        shutil.rmtree(cache_root() / "models" / resolve(checkpoint, params.student.chat_template).fingerprint,
                      ignore_errors=True)
    return np.array(scores)


def eval_prompts(params: Any, extra: int) -> list[dict[str, Any]]:
    """The build's eval splits, then built-in problems from another seed that the build does not hold."""
    built = io.read_parquet(layout.PROMPTS, "prompt")
    known = {p["id"] for p in built}
    held_out = [p for p in built if p["split"] in ("eval", "eval_shifted")]
    other = dataclasses.replace(params.prompts, seed=params.prompts.seed + 1000, count=max(4 * extra, 200))
    return held_out + [p for p in prompts.build(other, require_reference=True) if p["id"] not in known][:extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="smol")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--extra-eval", type=int, default=192)
    args = parser.parse_args()
    params = config.load().for_student(args.student)
    student = params.student
    records = dataset.read(Path(layout.dataset(args.student)))
    asked = eval_prompts(params, args.extra_eval)
    base = student.train
    print(f"{len(records)} records ({layout.dataset(args.student)}), batch {base.batch_size}, {base.epochs} epoch(s), "
          f"lr {base.lr}; evaluated on {len(asked)} prompts; {student.model}\n", flush=True)
    keys = args.recipes.split(",")
    unknown = [key for key in keys if key not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe '{unknown[0]}' (known: {', '.join(RECIPES)})")
    rows: list[tuple[str, float, dict[str, Any], np.ndarray]] = []
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="persyn-train-bench-") as scratch:
        trained = []
        for key in keys:  # each in a fresh process, as the train stage runs: no engine's threads beside it
            out = Path(scratch) / key
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                seconds, summary = pool.submit(train_one, key, records, student, out).result()
            trained.append((key, out, seconds, summary))
            print(f"{RECIPES[key][0]}: {seconds:.1f} s", flush=True)
        with RequestCache(Path(scratch) / "requests.sqlite") as cache:  # answers of this run only
            untrained = accuracy(student.model, params, asked, cache)
            for key, out, seconds, summary in trained:
                rows.append((RECIPES[key][0], seconds, summary, accuracy(f"local:{out.resolve()}", params, asked, cache)))
    report(rows, untrained)


def report(rows: list[tuple[str, float, dict[str, Any], np.ndarray]], untrained: np.ndarray) -> None:
    """The table, then the recipe the default should take."""
    first = rows[0][3]
    print("\n| recipe | seconds | steps/s | final loss | accuracy [95% CI] | Δ vs first [95% CI] | p |")
    print("|---|---|---|---|---|---|---|")
    wilson = stats.wilson(int(untrained.sum()), len(untrained))
    print(f"| untrained student | – | – | – | {wilson.estimate:.3f} [{wilson.low:.3f}, {wilson.high:.3f}] | – | – |")
    for label, seconds, summary, scores in rows:
        found = stats.wilson(int(scores.sum()), len(scores))
        diff = stats.paired(scores, first)
        print(f"| {label} | {seconds:.1f} | {summary['steps'] / seconds:.3f} | {summary['final_loss']:.3f} | "
              f"{found.estimate:.3f} [{found.low:.3f}, {found.high:.3f}] | {diff.difference.estimate:+.3f} "
              f"[{diff.difference.low:+.3f}, {diff.difference.high:+.3f}] | {diff.p_value:.2g} |")
    best = max(rows, key=lambda row: row[3].mean())
    floor = stats.wilson(int(best[3].sum()), len(best[3])).low
    chosen = min((row for row in rows if row[3].mean() >= floor), key=lambda row: row[1])
    print(f"\nbest accuracy: {best[0]}; the fastest recipe inside its interval (>= {floor:.3f}): {chosen[0]}")


if __name__ == "__main__":
    main()
