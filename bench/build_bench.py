"""Benchmark: where a cold build's time goes, stage by stage, on the embedded default with its
engines as committed against every engine set back to transformers float32 (variant transformers),
against the earlier default whose third teacher was the student's own weights (variant smol-teacher), or
against CTranslate2 with one replica per model and teachers in batches of 32 (variant one-replica).
With --parallel: two cold builds one after the other, each on its own empty request cache, against two
at the same time on one shared cache (what `dvc queue start -j 2` or two clones sharing
$PERSYN_CACHE_DIR do), and whether the two shared builds' datasets are identical.

Each variant is a scratch clone of HEAD with an empty request cache (converted models shared, so
one-time conversions are not counted), built with one `dvc repro`; a stage's time runs from its
"Running stage" line to the next one (DVC's own bookkeeping included), so the rows add up to the
wall time. Each cell also gives the stage's model requests answered from the request cache (of all
it made), read from its log; and each stage's fixed cost (bench/stage_overhead.py: a fresh process's
imports, params check and model identities, min of 3, measured after the builds on this working tree
with the first variant's params) is split from the rest (model work and DVC's bookkeeping).

    python bench/build_bench.py [--variants ctranslate2,transformers,smol-teacher,one-replica] [--target evaluate]
    python bench/build_bench.py --parallel [--target assemble]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import stage_overhead
from scratch import scratch_project

REQUESTS = re.compile(r": (\d+) requests, (\d+) from the cache, \d+ to compute")
ENGINE_LINE = re.compile(r'^engine = "ctranslate2"(?=\s*(#.*)?$)', re.MULTILINE)


def as_transformers(project: Path) -> None:
    """Every ctranslate2 engine back to transformers, and the options that only it knows dropped."""
    params = project / "params.toml"
    text = ENGINE_LINE.sub('engine = "transformers"', params.read_text())
    params.write_text(re.sub(r"^engine_options = \{[^}]*compute_type[^}]*\}\n", "", text, flags=re.MULTILINE))


SMOL_TEACHER = """[teachers.smol]   # the earlier default's teacher: the student's own weights
model = "packaged:smollm2-135m-instruct"
self_distillation = true
system_prompt = "You solve grade-school math word problems. Write the calculation in one short line, then finish with \
'The answer is N.' Example: 'Tom has 3 apples and buys 4 more. How many apples does he have?' -> '3 + 4 = 7. \
The answer is 7.'"
"""


def with_smol_teacher(project: Path) -> None:
    """The earlier default (issue 27 replaced its teacher smol, the student's own weights, by qwen_steps)."""
    params = project / "params.toml"
    text = params.read_text()
    block = re.search(r"^\[teachers\.qwen_steps\].*?(?=^\[)", text, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise SystemExit("params.toml has no [teachers.qwen_steps] to swap back")
    params.write_text(text[:block.start()] + SMOL_TEACHER + "\n" + text[block.end():])


def one_replica(project: Path) -> None:
    """The default before two CTranslate2 replicas: one replica of every thread, teachers in batches of 32."""
    params = project / "params.toml"
    text = params.read_text()
    for table in ("generation", "students.smol"):
        start = re.search(rf"^\[{re.escape(table)}\]", text, flags=re.MULTILINE).start()
        end = text.find("\n[", start + 1)
        end = len(text) if end < 0 else end  # the last table runs to the end of the file
        section = ENGINE_LINE.sub('engine = "ctranslate2"\nengine_options = { inter_threads = 1 }', text[start:end])
        if table == "generation":
            section = re.sub(r"^batch_size = \d+", "batch_size = 32", section, flags=re.MULTILINE)
        text = text[:start] + section + text[end:]
    params.write_text(text)


VARIANTS = {"ctranslate2": lambda project: None, "transformers": as_transformers, "smol-teacher": with_smol_teacher,
            "one-replica": one_replica}


@dataclass
class Stage:
    seconds: float = 0.0
    requests: int = 0
    cached: int = 0


def timed_repro(project: Path, env: dict[str, str], target: str) -> tuple[dict[str, Stage], float]:
    """Per stage that ran: seconds and its model requests (answered from the cache, of all), read from
    dvc repro's output as it streams; and the wall time."""
    stages: dict[str, Stage] = {"dvc start-up": Stage()}
    start = current_start = time.perf_counter()
    current = "dvc start-up"
    with subprocess.Popen(["dvc", "repro", target], cwd=project, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.match(r"Running stage '([^']+)'", line)
            if found:
                now = time.perf_counter()
                stages[current].seconds = now - current_start
                current, current_start = found.group(1), now
                stages[current] = Stage()
            elif asked := REQUESTS.search(line):
                stages[current].requests += int(asked.group(1))
                stages[current].cached += int(asked.group(2))
    if process.returncode != 0:
        raise SystemExit(f"dvc repro failed in {project}")
    end = time.perf_counter()
    stages[current].seconds = end - current_start
    return stages, end - start


def fixed_costs(names: list[str]) -> dict[str, float]:
    """bench/stage_overhead.py's fixed cost of each stage kind (its first teacher or student standing for
    the others), by build stage name."""
    from persyn.params import config

    kinds = {name.split("@")[0]: name for name in stage_overhead.stages(config.load(stage_overhead.ROOT / "params.toml"))}
    measured = {kind: stage_overhead.measure(name, "params.toml", 3)[0] for kind, name in kinds.items()}
    return {name: measured[name.split("@")[0]] for name in names if name.split("@")[0] in measured}


def through_assemble(stages: dict[str, Stage]) -> float:
    """Seconds from the start through the last assemble stage, in the order this build ran its stages
    (variants run different stages: another variant's order would leave some out)."""
    names = list(stages)
    last = max((i for i, n in enumerate(names) if n.split("@")[0] == "assemble"), default=len(names) - 1)
    return sum(stages[n].seconds for n in names[: last + 1])


def dataset_hash(project: Path) -> str:
    """The bytes of every dataset the build assembled."""
    digest = hashlib.sha256()
    for file in sorted((project / "data" / "dataset").rglob("*.parquet")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def parallel(target: str) -> None:
    """Two cold builds one after the other (each on its own empty cache, and the second on the first's
    cache) against two at once on one cache."""
    serial, caches = [], []
    for index in range(2):
        _, project, env = scratch_project(f"persyn-serial-{index}-")
        serial.append(timed_repro(project, env, target)[1])
        caches.append(env["PERSYN_CACHE_DIR"])
        print(f"serial build {index + 1}: {serial[-1]:.0f} s (dataset {dataset_hash(project)})", flush=True)
    _, project, env = scratch_project("persyn-warm-")
    warm = timed_repro(project, {**env, "PERSYN_CACHE_DIR": caches[0]}, target)[1]
    print(f"a third build on the first one's cache: {warm:.0f} s (dataset {dataset_hash(project)})", flush=True)
    clones = [scratch_project(f"persyn-parallel-{index}-") for index in range(2)]
    shared = clones[0][2]["PERSYN_CACHE_DIR"]
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        walls = list(pool.map(lambda clone: timed_repro(clone[1], {**clone[2], "PERSYN_CACHE_DIR": shared}, target)[1],
                              clones))
    both = time.perf_counter() - start
    hashes = [dataset_hash(project) for _, project, _ in clones]
    print(f"\n| two cold builds to `{target}` | wall (s) | vs at the same time |\n|---|---|---|")
    print(f"| one after the other, each on its own empty cache | {sum(serial):.0f} ({serial[0]:.0f} + {serial[1]:.0f}) "
          f"| {both / sum(serial):.2f} |")
    print(f"| one after the other on one cache (the second finds every answer) | {serial[0] + warm:.0f} "
          f"({serial[0]:.0f} + {warm:.0f}) | {both / (serial[0] + warm):.2f} |")
    print(f"| at the same time on one cache | {both:.0f} (each {walls[0]:.0f}, {walls[1]:.0f}) | 1.00 |")
    print(f"\nthe shared builds' datasets {'identical' if hashes[0] == hashes[1] else 'DIFFER'} ({hashes[0]}, {hashes[1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="ctranslate2,transformers")
    parser.add_argument("--target", default="evaluate")
    parser.add_argument("--parallel", action="store_true", help="two builds at once on one cache against two serial")
    args = parser.parse_args()
    if args.parallel:
        parallel(args.target)
        return
    results: dict[str, tuple[dict[str, Stage], float]] = {}
    load = Path("/proc/loadavg").read_text().split()[0]
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
        _, project, env = scratch_project(f"persyn-build-{variant}-")
        VARIANTS[variant](project)
        results[variant] = timed_repro(project, env, args.target)
        print(f"{variant}: {results[variant][1]:.0f} s", flush=True)
    names = list(dict.fromkeys(name for stages, _ in results.values() for name in stages))
    fixed = fixed_costs(names)
    first = next(iter(results))
    print(f"\nload average at the start: {load}; each cell: seconds (model requests from the cache / made)")
    print(f"\n| stage | fixed cost | {first}: the rest | " + " | ".join(results) + " |\n|---|---|---|" + "---|" * len(results))
    for name in names:
        base = results[first][0].get(name, Stage())
        cost = fixed.get(name)
        cells = [f"{stages[name].seconds:.1f}" + (f" ({stages[name].cached}/{stages[name].requests})"
                                                  if stages[name].requests else "") if name in stages else "–"
                 for stages, _ in results.values()]
        print(f"| {name} | {'–' if cost is None else f'{cost:.2f}'} | "
              f"{'–' if cost is None else f'{base.seconds - cost:.1f}'} | " + " | ".join(cells) + " |")
    to_assemble = [through_assemble(stages) for stages, _ in results.values()]
    walls = [wall for _, wall in results.values()]
    print("| **to assemble** | | | " + " | ".join(f"**{t:.0f}**" for t in to_assemble) + " |")
    print("| **total** | | | " + " | ".join(f"**{wall:.0f}**" for wall in walls) + " |")
    if len(results) > 1:  # each variant against the first, side by side from one run
        print("| **ratio to the first (to assemble / total)** | | | " + " | ".join(
            f"{to_assemble[i] / to_assemble[0]:.2f}x / {walls[i] / walls[0]:.2f}x" for i in range(len(walls))) + " |")
    print(f"\nlargest fixed cost: {max(fixed.values()):.2f} s ({max(fixed, key=fixed.get)})")


if __name__ == "__main__":
    main()
