"""Benchmark: one SFT epoch of the student under the training recipes a CPU can choose, side by side.

Trains SmolLM2-135M-Instruct (the embedded student) on the same records with persyn.pipeline.train.train:
float32 with every block trained (the embedded default) and with the lowest blocks frozen, then the
same two in bfloat16 autocast (the science profile's choice where the CPU has native bfloat16), and
prints seconds, tokens per second, the ratio to the first row and the final loss. bfloat16 is fast
only where the CPU has AMX or AVX512-BF16 (lscpu's flags); elsewhere torch emulates it, 15-21x
slower than float32 on a 2-core AVX2 EPYC.

    python bench/train_bench.py [--records 96] [--freeze 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from persyn.pipeline import train
from persyn.sources.arithmetic import generate
from persyn.params.config import StudentConfig, TrainConfig

STUDENT = "packaged:smollm2-135m-instruct"


def records(count: int) -> list[dict]:
    """Built-in problems with a one-line worked answer, like a teacher's."""
    return [{"messages": [{"role": "user", "content": p["prompt"]},
                          {"role": "assistant", "content": f"The result is {p['reference']}. The answer is {p['reference']}."}]}
            for p in generate(count, seed=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=96)
    parser.add_argument("--freeze", type=int, default=20, help="blocks frozen in the last row")
    args = parser.parse_args()
    rows = records(args.records)
    recipes = [(f"{precision}, {f'{frozen} lowest blocks frozen' if frozen else 'all blocks'}", frozen, precision)
               for precision in ("float32", "bfloat16") for frozen in (0, args.freeze)]
    print(f"{args.records} records, batch 16, one epoch, {STUDENT}\n")
    print("| recipe | seconds | tokens/s | vs first | final loss |\n|---|---|---|---|---|")
    first = None
    for label, frozen, precision in recipes:
        config = TrainConfig(batch_size=16, max_length=192, lr=1e-4, freeze_layers=frozen, precision=precision)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary, _ = train.train(rows, StudentConfig(model=STUDENT), config, Path(out), "bench records")
            seconds = time.perf_counter() - start
        tokens = summary["response_tokens"]
        first = first or seconds
        print(f"| {label} | {seconds:.1f} | {tokens / seconds:.0f} (response) | {first / seconds:.2f}x | "
              f"{summary['final_loss']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
