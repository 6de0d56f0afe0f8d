"""params.toml → typed, validated configuration, with schemas/params.schema.json as the one source
of every key's type, range, default and description.

The file is checked against the schema first (unknown keys, types, ranges), then turned into frozen
dataclasses whose defaults are read from the schema (persyn/core/tables.py: a class that drifts from the
schema fails at import), then checked against the rules between keys (persyn/params/rules.py); any problem
is one PersynError naming the key. docs/params.md is generated from the schema too (persyn/params/paramdoc.py).
"""

from __future__ import annotations

import argparse

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from persyn.core import layout, tables
from persyn.params import rules
from persyn.core.errors import PersynError
from persyn.params.rules import release_spelling as release_spelling  # re-exported: callers import it from here
from persyn.core.schemas import check
from persyn.core.tables import SCHEMA as SCHEMA  # re-exported: callers import it from here
from persyn.core.tables import build, table
from persyn.core.tables import schema_node as schema_node  # re-exported: callers import it from here

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@table("prompts")
class PromptsConfig:
    source: str
    seed: int
    router_size: int
    eval_size: int
    count: int
    shifted_eval_size: int
    shifted_beside_source: bool
    max_prompt_chars: int
    path: str | None
    hf: dict[str, str] | None
    fields: dict[str, Any]
    tasks: tuple[dict[str, Any], ...] | None


@table("embed")
class EmbedConfig:
    model: str
    engine: str
    batch_size: int
    max_length: int
    device: str


@table("generation")
class SamplingConfig:
    """How one teacher generates; the [generation] table gives the defaults."""

    engine: str
    device: str
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    batch_size: int
    seed: int
    engine_options: dict[str, Any]


@table("teachers", "*", derived=("name",), inline=("sampling",))
class TeacherConfig:
    name: str
    model: str
    sampling: SamplingConfig
    system_prompt: str | None
    prompt_template: str | None
    self_distillation: bool
    max_share: float | None
    max_prompts: int | None


@table("quality")
class QualityConfig:
    kind: str
    reward_model: str | None
    engine: str
    device: str
    batch_size: int
    max_length: int
    engine_options: dict[str, Any]

    @property
    def verifiable(self) -> bool:
        """Answers pass or fail a check (math, a task verifier), rather than getting a reward model's score."""
        return self.kind in ("math", "verifier")


@table("router")
class RouterConfig:
    alpha: float
    normalisation: str
    tie_margin: float
    head: str
    hidden: int
    epochs: int
    lr: float
    weight_decay: float
    validation_fraction: float
    refit_on_all: bool
    pairs: str
    backbone: str
    lm_epochs: int
    lm_lr: float
    batch_size: int
    max_length: int
    device: str
    seed: int


@table("route", "budget")
class Budget:
    """A bound on the teachers' spend on routed pool prompts, in USD or completion tokens."""

    amount: float
    unit: str


@table("route")
class RouteConfig:
    strategy: str
    seed: int
    mix_ratio: float
    car_beta: float
    fallback: int
    budget: Budget | None


@table("train")
class TrainConfig:
    epochs: float
    lr: float
    batch_size: int
    grad_accum: int
    max_length: int
    warmup_ratio: float
    weight_decay: float
    seed: int
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    freeze_layers: int
    precision: str
    batching: str


@table("eval")
class EvalConfig:
    max_tokens: int
    batch_size: int
    lm_eval_tasks: tuple[str, ...]
    lm_eval_limit: int


@table("students", "*", derived=("name",))
class StudentConfig:
    """One student: its model and engine, and [train]/[eval] with its own overrides applied (parse)."""

    model: str
    engine: str
    device: str
    batch_size: int
    max_length: int
    engine_options: dict[str, Any]
    chat_template: str | None
    train: TrainConfig
    eval: EvalConfig
    name: str = "student"


@table("assemble")
class AssembleConfig:
    name: str
    shard_size: int
    license: str
    drop_truncated: bool
    unverified: str


@dataclass(frozen=True)
class Params:
    """The whole file; [generation] is folded into each teacher's sampling."""

    prompts: PromptsConfig
    embed: EmbedConfig
    teachers: dict[str, TeacherConfig]
    students: dict[str, StudentConfig]
    quality: QualityConfig
    router: RouterConfig
    route: RouteConfig
    assemble: AssembleConfig
    train: TrainConfig
    eval: EvalConfig

    def teacher(self, name: str) -> TeacherConfig:
        """The named teacher, or one error listing the configured ones."""
        if name not in self.teachers:
            known = ", ".join(sorted(self.teachers))
            raise PersynError(f"params.toml: unknown teacher '{name}' (configured: {known})")
        return self.teachers[name]

    def for_student(self, name: str) -> "Params":
        """The build as one student's branch sees it: only that student, and its [train]/[eval]."""
        if name not in self.students:
            known = ", ".join(sorted(self.students))
            raise PersynError(f"params.toml: unknown student '{name}' (configured: {known})")
        chosen = self.students[name]
        return replace(self, students={name: chosen}, train=chosen.train, eval=chosen.eval)

    @property
    def student(self) -> StudentConfig:
        """The student of a one-student build or of a `for_student` view."""
        if len(self.students) != 1:
            raise PersynError(f"params.toml: {len(self.students)} students ({', '.join(sorted(self.students))}): "
                              "this step needs one, chosen with Params.for_student")
        return next(iter(self.students.values()))


SAMPLING_KEYS = frozenset(SamplingConfig.__dataclass_fields__)


def _teacher(name: str, mapping: dict[str, Any], generation: SamplingConfig) -> TeacherConfig:
    """The teacher's own keys, and its sampling keys over [generation]'s; engine options are inherited
    only by a teacher on [generation]'s engine (another engine's options would not apply)."""
    tuned = {key: value for key, value in mapping.items() if key in SAMPLING_KEYS}
    options = tuned.get("engine_options", {})
    same_engine = tuned.get("engine", generation.engine) == generation.engine
    tuned["engine_options"] = {**generation.engine_options, **options} if same_engine else options
    own = {key: value for key, value in mapping.items() if key not in SAMPLING_KEYS}
    return build(TeacherConfig, own, name=name, sampling=replace(generation, **{
        key: tables.value(tables.hints(SamplingConfig)[key], given) for key, given in tuned.items()}))


def _student(name: str, mapping: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any]) -> StudentConfig:
    """A [students.<name>] table; its train/eval subtables override [train]/[eval] key by key."""
    own = {key: value for key, value in mapping.items() if key not in ("train", "eval")}
    return build(StudentConfig, own, name=name, train=build(TrainConfig, {**train, **mapping.get("train", {})}),
                 eval=build(EvalConfig, {**evaluation, **mapping.get("eval", {})}))


MIGRATE_STUDENT = ("[student] is now [students.<name>] (one table per student; the name is used in stage names, "
                   f"{layout.DATA}/*/<name>/ and {layout.METRICS}/<name>/): rename [student] to [students.student], or give the "
                   "student a name of its own ([a-z0-9_-]+)")


def _prompts_table(mapping: dict[str, Any]) -> dict[str, Any]:
    """[prompts] as the stage uses it: shifted_eval_size applies to builtin:arithmetic, and to another
    source only with shifted_beside_source (a file of your own gets no arithmetic problems unasked)."""
    if mapping["source"] == "builtin:arithmetic" or mapping.get("shifted_beside_source"):
        return mapping
    return {**mapping, "shifted_eval_size": 0}


def _check_finite(value: Any, key: str, source: str) -> None:
    """TOML allows nan and inf, and every range check passes them: no key of persyn's means either."""
    if isinstance(value, float) and not math.isfinite(value):
        raise PersynError(f"{source}: {key}: {value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, inner in items:
        _check_finite(inner, f"{key}.{name}" if key else str(name), source)


def parse(raw: dict[str, Any], source: str = "params.toml") -> Params:
    """Validate a parsed params mapping (the schema, then persyn/params/rules.py) and build the typed configuration."""
    if "student" in raw:
        raise PersynError(f"{source}: {MIGRATE_STUDENT}")
    _check_finite(raw, "", source)
    check(raw, "params", source)
    generation = build(SamplingConfig, raw["generation"])
    params = Params(
        prompts=build(PromptsConfig, _prompts_table(raw["prompts"])),
        embed=build(EmbedConfig, raw["embed"]),
        teachers={name: _teacher(name, table, generation) for name, table in sorted(raw["teachers"].items())},
        students={name: _student(name, mapping, raw["train"], raw["eval"])
                  for name, mapping in sorted(raw["students"].items())},
        quality=build(QualityConfig, raw["quality"]),
        router=build(RouterConfig, raw["router"]),
        route=build(RouteConfig, raw["route"]),
        assemble=build(AssembleConfig, raw["assemble"]),
        train=build(TrainConfig, raw["train"]),
        eval=build(EvalConfig, raw["eval"]),
    )
    rules.check(params)
    return params


def stage_arguments(description: str, *names: str) -> argparse.Namespace:
    """The positional arguments of a foreach stage (student, teacher: dvc.yaml's ${key}s), with the
    stage's docstring as its --help."""
    parser = argparse.ArgumentParser(description=description)
    for name in names:
        parser.add_argument(name)
    return parser.parse_args()


def read(path: str | Path) -> dict[str, Any]:
    """The params file as parsed TOML, not yet validated."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersynError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PersynError(f"{path}: not valid TOML: {error}") from None


def load(path: str | Path = "params.toml", models_here: bool = True) -> Params:
    """Read and validate params.toml, and (`models_here`: the build runs here) the local model directories
    it names; every stage calls this before any work. A report of a recorded build passes False."""
    params = parse(read(path), str(path))
    if models_here:
        rules.local_models(params, str(path))
    return params
