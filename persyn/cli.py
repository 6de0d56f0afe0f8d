"""The `persyn` command: check params, prepare models. The build itself is `dvc repro`."""

from __future__ import annotations

import argparse
import time

from persyn import config, models
from persyn.errors import guarded


def configured_specs(params: config.Params) -> dict[str, str]:
    """Every model the params name, by role."""
    specs = {"embed": params.embed.model, "student": params.student.model}
    specs.update({f"teacher {name}": teacher.model for name, teacher in params.teachers.items()})
    if params.quality.reward_model:
        specs["reward model"] = params.quality.reward_model
    return specs


def check(args: argparse.Namespace) -> None:
    params = config.load(args.params)
    print(f"{args.params}: valid; {len(params.teachers)} teachers: {', '.join(params.teachers)}; "
          f"alpha {params.router.alpha}; strategy {params.route.strategy}")


def prepare(args: argparse.Namespace) -> None:
    """Resolve every configured model once (packaged GGUFs are converted to float32 here)."""
    params = config.load(args.params)
    for role, spec in configured_specs(params).items():
        start = time.perf_counter()
        resolved = models.resolve(spec)
        print(f"{role:>16}  {resolved.identity}  ({time.perf_counter() - start:.1f}s)  {resolved.path}")


@guarded
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="persyn", description=__doc__)
    parser.add_argument("--params", default="params.toml")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate params.toml").set_defaults(run=check)
    commands.add_parser("models", help="resolve (and convert once) every configured model").set_defaults(run=prepare)
    args = parser.parse_args(argv)
    args.run(args)
