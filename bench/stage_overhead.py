"""Benchmark: each stage's fixed cost, what it pays before any model loads. A fresh process runs the
stage script's imports (not its main), config.load() of params.toml and the identity of the models the
stage names; its wall time (interpreter start included) is the fixed cost, min of --runs, and
`python -X importtime` names the largest top-level imports. Issue 28 asks for at most 1.5 s a stage.

    python bench/stage_overhead.py [--runs 3] [--params params.toml]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def stages(params: Any) -> dict[str, tuple[list[str], Callable[[Any], list[tuple[str, str | None]]]]]:
    """Stage name → (script and arguments, the (model spec, chat template) pairs it resolves)."""
    student = sorted(params.students)[0]
    teacher = sorted(params.teachers)[0]

    def teacher_model(p: Any) -> list[tuple[str, str | None]]:
        return [(p.teachers[teacher].model, None)]

    def student_model(p: Any) -> list[tuple[str, str | None]]:
        return [(p.students[student].model, p.students[student].chat_template)]

    def every_model(p: Any) -> list[tuple[str, str | None]]:
        return ([(p.embed.model, None)] + [(t.model, None) for t in p.teachers.values()]
                + [(s.model, s.chat_template) for s in p.students.values()])

    def nothing(p: Any) -> list[tuple[str, str | None]]:
        return []

    return {
        "prompts": (["stages/prompts.py"], nothing),
        "models": (["stages/models.py"], every_model),
        "embed": (["stages/embed.py"], lambda p: [(p.embed.model, None)]),
        f"sample@{teacher}": (["stages/sample.py", teacher], teacher_model),
        f"score@{student}-{teacher}": (["stages/score.py", student, teacher], student_model),
        f"fit_router@{student}": (["stages/fit_router.py", student], nothing),
        f"route@{student}": (["stages/route.py", student], nothing),
        f"generate@{student}-{teacher}": (["stages/generate.py", student, teacher], teacher_model),
        f"fallback@{student}": (["stages/fallback.py", student], nothing),
        f"assemble@{student}": (["stages/assemble.py", student], nothing),
        "sharing": (["stages/sharing.py"], nothing),
        f"train@{student}": (["stages/train.py", student], student_model),
        f"evaluate@{student}": (["stages/evaluate.py", student], student_model),
    }


def child(stage: str, params_file: str) -> None:
    """The fixed cost itself: the stage script's imports, the params check, the models' identities."""
    import runpy

    from persyn.core import models
    from persyn.params import config

    argv, _ = stages(config.load(params_file))[stage]
    sys.argv = argv
    runpy.run_path(argv[0], run_name="stage")
    params = config.load(params_file)
    for spec, template in stages(params)[stage][1](params):
        models.identity(spec, template)


def largest_imports(stderr: str, count: int = 3) -> list[tuple[str, float]]:
    """The top-level imports (those no other import pulled in) that took longest, in seconds."""
    top = [(m.group(4), int(m.group(2)) / 1e6) for line in stderr.splitlines()
           if (m := IMPORT_LINE.match(line)) and len(m.group(3)) == 1]
    return sorted(top, key=lambda item: -item[1])[:count]


def measure(stage: str, params_file: str, runs: int) -> tuple[float, list[tuple[str, float]]]:
    """Min wall time of `runs` fresh processes, and the largest imports of the fastest one."""
    best, imports = float("inf"), []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-X", "importtime", __file__, "--child", stage, "--params", params_file],
                              cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{stage}: {done.stderr[-2000:]}")
        if seconds < best:
            best, imports = seconds, largest_imports(done.stderr)
    return best, imports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--params", default="params.toml")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.params)
        return
    from persyn.params import config

    print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    print("\n| stage | fixed cost (s) | largest imports (cumulative s) |\n|---|---|---|")
    for stage in stages(config.load(ROOT / args.params)):
        seconds, imports = measure(stage, args.params, args.runs)
        print(f"| {stage} | {seconds:.2f} | " + ", ".join(f"{name} {s:.2f}" for name, s in imports) + " |", flush=True)
    print(f"\nload average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
