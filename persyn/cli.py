"""The `persyn` command: check params, prepare models, look after the request cache, release
and diff datasets. The build itself is `dvc repro`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import yaml

from persyn.core import io, layout, models
from persyn.params import config
from persyn.pipeline.cache import RequestCache, default_path, regular_file_on
from persyn.core.errors import PersynError, guarded


def configured_specs(params: config.Params) -> dict[str, str]:
    """Every model the params name, by role."""
    specs = {"embed": params.embed.model}
    specs.update({f"student {name}": student.model for name, student in params.students.items()})
    specs.update({f"teacher {name}": teacher.model for name, teacher in params.teachers.items()})
    if params.quality.reward_model:
        specs["reward model"] = params.quality.reward_model
    return specs


def check(args: argparse.Namespace) -> None:
    """The params check every stage runs (config.load: the schema, every engine's options checked
    without loading, local model directories), and the prompt source as the prompts stage reads it
    (a hub dataset is left to that stage)."""
    from persyn.pipeline import prompts

    params = config.load(args.params)
    source = "hf source: read by the prompts stage"
    if params.prompts.source != "hf":
        built = prompts.build(params.prompts, require_reference=params.quality.kind == "math")
        source = prompts.describe_counts(prompts.split_counts(built))
    print(f"{args.params}: valid; {len(params.teachers)} teachers: {', '.join(params.teachers)}; "
          f"{len(params.students)} student{'s' * (len(params.students) > 1)}: {', '.join(params.students)}; "
          f"alpha {params.router.alpha}; strategy {params.route.strategy}; {source}")


def premise_command(args: argparse.Namespace) -> None:
    """The premise table of one student's scored router subset S (persyn/science/premise.py)."""
    from persyn.science import premise

    params = config.load(args.params)
    student = args.student or params.student.name
    params.for_student(student)
    teachers = sorted(params.teachers)
    scores = [r for t in teachers for r in io.read_parquet(layout.scores(student, t), "score")]
    prompts = io.read_parquet(layout.PROMPTS, "prompt")
    table = premise.premise(*premise.matrices(prompts, scores, teachers, layout.scores_dir(student))[1:], teachers)
    print(premise.markdown(table), end="")
    if args.json:
        io.write_json(args.json, table)


def params_command(args: argparse.Namespace) -> None:
    """The parameter reference (docs/params.md): every key's type, default, range and description from
    the schema, beside what the params file sets (the file must be valid)."""
    from persyn.params import paramdoc

    raw = config.read(args.params)
    config.parse(raw, args.params)
    page = paramdoc.markdown(raw)
    print(page, end="")
    if args.markdown:
        with io.atomic_path(args.markdown) as scratch:
            scratch.write_text(page, encoding="utf-8")


def prepare(args: argparse.Namespace) -> None:
    """Resolve every configured model once (packaged GGUFs are converted to float32 here), then let
    each role's engine build what it needs (CTranslate2 converts once per compute type)."""
    from persyn import engines

    params = config.load(args.params)
    for role, spec in configured_specs(params).items():
        start = time.perf_counter()
        resolved = models.resolve(spec)
        print(f"{role:>16}  {resolved.identity}  ({time.perf_counter() - start:.1f}s)  {resolved.path}")
    uses = [(f"teacher {name}", models.resolve(t.model), t.sampling.engine, t.sampling.device,
             t.sampling.engine_options, ["generate"]) for name, t in params.teachers.items()]
    uses += [(f"student {name}", models.resolve(s.model, s.chat_template), s.engine, s.device, s.engine_options,
              ["score", "generate"]) for name, s in params.students.items()]
    uses.append(("embed", models.resolve(params.embed.model), params.embed.engine, params.embed.device, {}, ["encode"]))
    for role, model, engine, device, options, needs in uses:
        start = time.perf_counter()
        for path in engines.prepare(engine, model, device, options, needs):
            print(f"{role:>16}  {engine}: {path}  ({time.perf_counter() - start:.1f}s)")


def referenced_keys(lock: Path) -> set[str]:
    """Request-cache keys named by the parquet outputs that a dvc.lock lists, inside output
    directories too (answers, scores, the oracle's scores, the evaluation's answers and scores)."""
    if not lock.is_file():
        raise PersynError(f"{lock}: file not found (gc keeps what the current build references; run dvc repro)")
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    outs = [lock.parent / out["path"] for stage in stages.values() for out in stage.get("outs", [])]
    files = [f for out in outs for f in ([out] if out.is_file() else sorted(out.rglob("*.parquet")))]
    keys: set[str] = set()
    for path in (f for f in files if f.suffix == ".parquet"):
        columns = pl.read_parquet_schema(path)
        if "request" in columns:
            keys.update(pl.read_parquet(path, columns=["request"])["request"].to_list())
        if "requests" in columns:
            keys.update(k for row in pl.read_parquet(path, columns=["requests"])["requests"] for k in row)
    return keys


def cache_command(args: argparse.Namespace) -> None:
    path = Path(args.cache) if args.cache else default_path()
    if not path.exists() and regular_file_on(path) is None:  # never create a cache only to look at it
        print(f"{path}: no request cache here (a build creates one)")
        return
    with RequestCache(path) as cache:
        if args.action == "stats":
            rows = cache.stats()
            size = sum(p.stat().st_size for p in cache.path.parent.glob(cache.path.name + "*"))
            print(f"{cache.path}: {sum(r[2] for r in rows)} entries, {size / 1e6:.1f} MB on disk")
            for model, kind, entries, stored in rows:
                print(f"{entries:>8}  {kind:<14} {stored / 1e6:>8.2f} MB  {model}")
        elif args.action == "gc":
            print(f"removed {cache.gc(referenced_keys(Path(args.lock)), args.older_than)} entries")
        else:
            problems = cache.verify()
            for key, problem in problems:
                print(f"{key or cache.path}: {problem}")
            damaged = {key for key, _ in problems if key is not None}
            if args.repair and damaged:
                cache.delete(damaged)
                print(f"deleted {len(damaged)} unreadable entries (the next build computes them again)")
            print(f"{cache.path}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
            if problems and not (args.repair and len(damaged) == len(problems)):
                raise SystemExit(1)


def plan_command(args: argparse.Namespace) -> None:
    from persyn.project import plan

    result = plan.plan(config.load(args.params))
    print(plan.render(result))
    if args.json:
        io.write_json(args.json, result)


def doctor_command(args: argparse.Namespace) -> None:
    from persyn.project import doctor

    params = config.load(args.params)
    print("\n".join(doctor.environment()))
    findings = doctor.run(params)
    print(doctor.render(findings))
    if not all(f.ok for f in findings):
        raise SystemExit(1)


def release_command(args: argparse.Namespace) -> None:
    from persyn.project import release

    for target in release.release(args.version, students=args.student):
        print(f"released {target} (tag {target.parent.name}@{target.name})")


def only_student(params: config.Params, command: str) -> str:
    """The student a per-student command means when none is named: the only one there is."""
    if len(params.students) > 1:
        raise PersynError(f"{command}: {len(params.students)} students ({', '.join(params.students)}): "
                          "choose one with --student")
    return next(iter(params.students))


def diff_command(args: argparse.Namespace) -> None:
    from persyn.project import release

    student = args.student or only_student(config.load(args.params), "diff")
    text = release.markdown(release.diff(Path("."), args.rev_a, args.rev_b, student))
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


def report_command(args: argparse.Namespace) -> None:
    from persyn import report

    page = report.report(Path("."), args.rev, Path(args.out), args.strategies)
    print(f"wrote {page} and {page.parent / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    """The command line (tests/test_readme.py parses every documented command with it)."""
    parser = argparse.ArgumentParser(prog="persyn", description=__doc__)
    parser.add_argument("--params", default="params.toml", metavar="FILE",
                        help="the params file every command reads (default: params.toml); give it before the command")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        """A subcommand whose --help page starts with its one-line summary (the list's) and any details."""
        return commands.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}".strip())

    command("check", "validate params.toml",
            "The check every stage runs before any work, and the prompt source as the prompts stage reads it: "
            "one line naming the key or file:line on a mistake.").set_defaults(run=check)
    reference = command("params", "every params.toml key: type, default, range, description (markdown)")
    reference.add_argument("--markdown", metavar="FILE", help="also write it to FILE (docs/params.md)")
    reference.set_defaults(run=params_command)
    command("models", "resolve (and convert once) every configured model",
            "Packaged GGUFs are converted to float32 once, and each engine builds what it needs "
            "(CTranslate2 converts once per compute type).").set_defaults(run=prepare)
    cache = command("cache", "request cache: stats | gc | verify",
                    "The cache of every generation and score, under $PERSYN_CACHE_DIR/requests/ (docs/cache.md).")
    cache.add_argument("action", choices=["stats", "gc", "verify"],
                       help="stats: what it holds; gc: drop the entries no output of dvc.lock references; "
                            "verify: find the entries it cannot read")
    cache.add_argument("--cache", help="SQLite file (default $PERSYN_CACHE_DIR/requests/requests.sqlite)")
    cache.add_argument("--lock", default="dvc.lock", help="gc keeps the entries this lock's outputs reference")
    cache.add_argument("--older-than", type=float, metavar="DAYS",
                       help="gc drops only unreferenced entries older than this (keeps recent experiments')")
    cache.add_argument("--repair", action="store_true", help="verify deletes the entries it cannot read")
    cache.set_defaults(run=cache_command)
    holds = command("premise", "does PerSyn's premise hold here? the premise table of the scored router subset S",
                    "Per family and teacher, verified accuracy on S; the correctness oracle's headroom over the best "
                    "single teacher with a 95% CI; disagreement; the learnability spread among right answers. "
                    "Needs the score stages (dvc repro score).")
    holds.add_argument("--student", help="whose learnability (default: the only student)")
    holds.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    holds.set_defaults(run=premise_command)
    estimate = command("plan", "generations, tokens and cost the build will make, before it runs",
                       "Reads params.toml and the prompt source only: no model is loaded.")
    estimate.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    estimate.set_defaults(run=plan_command)
    command("doctor", "load every configured engine and have it answer one request",
            "Exits 1 when one fails, naming it.").set_defaults(run=doctor_command)
    publish = command("release", "release each student's dataset as <name>-<student>@v<version>",
                      "Needs a clean git tree and an up-to-date dvc status; writes releases/<name>-<student>/v<version>/ "
                      "(shards, card, provenance.json), tracks it with DVC, commits and tags it.")
    publish.add_argument("version", help="semantic version, e.g. 1.0.0")
    publish.add_argument("--student", action="append", help="release only this student's dataset (repeatable; "
                                                            "default: every student's)")
    publish.set_defaults(run=release_command)
    compare = command("diff", "what changed between two revisions or experiments",
                      "Params, teacher shares, records and metrics of one student's dataset, from REV_A to REV_B. "
                      "Both revisions' outputs must be in the local DVC cache (built here, or dvc pull).")
    compare.add_argument("rev_a", metavar="REV_A", help="the revision to compare from: a git revision "
                                                        "(HEAD~1, a tag, a commit) or a DVC experiment's name")
    compare.add_argument("rev_b", metavar="REV_B", help="the revision to compare to, of the same kinds")
    compare.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    compare.add_argument("--student", help="whose dataset and metrics (default: the only student)")
    compare.set_defaults(run=diff_command)
    page = command("report", "an HTML page and markdown about a build, revision or experiment",
                   "report/index.html and report/report.md: routing, the dataset, training and evaluation.")
    page.add_argument("--rev", help="a git revision or DVC experiment name (default: the workspace)")
    page.add_argument("--out", default="report", help="folder for index.html and report.md (default: report/)")
    page.add_argument("--strategies", type=Path, metavar="FILE",
                      help="a strategy comparison to chart (JSON, as schemas/strategy_results.schema.json describes)")
    page.set_defaults(run=report_command)
    return parser


@guarded
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)
