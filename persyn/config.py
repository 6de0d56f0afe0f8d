"""params.toml → typed, validated configuration, with schemas/params.schema.json as the one source
of every key's type, range, default and description.

The file is checked against the schema first (unknown keys, types, ranges), then turned into frozen
dataclasses whose defaults are read from the schema; any problem is one PersynError naming the key.
A table class declares only its fields' names and Python types: importing this module fails if a
schema key has no field, a field has no key, or a field's type disagrees with the schema, so the
classes cannot drift from the schema (docs/params.md is generated from it too: persyn/paramdoc.py).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import sys
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, TypeVar

from persyn.errors import PersynError
from persyn.schemas import check, resolved, validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SCHEMA = validator("params").schema
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", tuple: "array", dict: "object"}
T = TypeVar("T")


def schema_node(*path: str) -> dict[str, Any]:
    """The params schema of the table at `path`; "*" steps into each named table of a map (teachers)."""
    node = SCHEMA
    for part in path:
        node = resolved(node["additionalProperties"] if part == "*" else node["properties"][part], SCHEMA)
    return node


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """A field annotation without its `| None`, and whether it had one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return inner, True
    return hint, False


def _origin(hint: Any) -> Any:
    """The class an annotation stands for: tuple for tuple[str, ...], the class itself for a class."""
    base = _unwrap(hint)[0]
    return typing.get_origin(base) or base


def _schema_type(spec: dict[str, Any]) -> str:
    """The JSON type a key's schema allows ("any" where it allows several)."""
    if "type" in spec:
        return spec["type"]
    enum = spec.get("enum", [None])
    return "string" if all(isinstance(value, str) for value in enum) else "any"


def _value(hint: Any, value: Any) -> Any:
    """A validated TOML value as its field holds it: arrays become tuples, sub-tables their class."""
    origin = _origin(hint)
    if origin is tuple:
        return tuple(value)
    if dataclasses.is_dataclass(origin) and isinstance(value, dict):
        return build(origin, value)
    return value


def _check_field(cls: type, name: str, hint: Any, spec: dict[str, Any], required: bool, where: str) -> None:
    """The annotation must say what the schema says: the same JSON type, and `| None` exactly where
    the key is optional without a default."""
    origin = _origin(hint)
    annotated = "object" if dataclasses.is_dataclass(origin) else JSON_TYPES.get(origin, "any")
    wanted = _schema_type(spec)
    agree = annotated == wanted or "any" in (annotated, wanted)
    if not agree or _unwrap(hint)[1] != (not required and "default" not in spec):
        raise TypeError(f"{cls.__name__}.{name}: annotated {hint}, but the schema's {where}.{name} is "
                        f"{'required ' if required else ''}{wanted}{' with a default' if 'default' in spec else ''}")


def table(*path: str, derived: tuple[str, ...] = (), inline: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
    """Make the class a frozen dataclass of the params table at `path`, one field per key, each
    defaulting to the schema's default (an optional key without one: None). `derived` fields are
    not keys (a teacher's name); an `inline` field is a table class whose keys sit in this table
    (a teacher's sampling keys). A key without a field, a field without a key or a type that
    disagrees with the schema is a TypeError at import."""

    def wrap(cls: type[T]) -> type[T]:
        node, where = schema_node(*path), ".".join(path)
        keys, hints = node["properties"], typing.get_type_hints(cls)
        own = [name for name in hints if name not in derived + inline]
        inlined = {key for name in inline for key in hints[name].__dataclass_fields__}
        unused = sorted(set(keys) - set(own) - inlined)
        if unused:
            raise TypeError(f"params schema: {where}.{unused[0]} is a key with no field in {cls.__name__}")
        for name in own:
            if name not in keys:
                raise TypeError(f"{cls.__name__}.{name} is a field with no key {where}.{name} in the params schema")
            spec = resolved(keys[name], SCHEMA)
            _check_field(cls, name, hints[name], spec, name in node.get("required", ()), where)
            if "default" in spec:
                default = _value(hints[name], spec["default"])
                mutable = isinstance(default, (dict, list))
                setattr(cls, name, dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d)) if mutable else default)
            elif _unwrap(hints[name])[1]:
                setattr(cls, name, None)
        return dataclass(frozen=True)(cls)

    return wrap


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type[T], mapping: dict[str, Any], **derived: Any) -> T:
    """The typed table from its validated params mapping; absent keys take the schema's defaults."""
    hints = _hints(cls)
    return cls(**{key: _value(hints[key], value) for key, value in mapping.items()}, **derived)


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

    def __post_init__(self) -> None:
        if (self.source == "reasoning_gym") != bool(self.tasks):
            raise PersynError("params.toml: prompts.tasks is required when prompts.source = 'reasoning_gym', and only then"
                              if self.source == "reasoning_gym" else
                              f"params.toml: prompts.tasks applies to prompts.source = 'reasoning_gym', not '{self.source}'")
        if self.source == "reasoning_gym":
            from persyn import tasks

            tasks.check_tasks(self.tasks or ())
        if self.source in ("jsonl", "parquet") and not self.path:
            raise PersynError(f"params.toml: prompts.path is required when prompts.source = '{self.source}'")
        if self.source == "hf" and not self.hf:
            raise PersynError("params.toml: prompts.hf is required when prompts.source = 'hf'")
        generated = self.source in ("builtin:arithmetic", "reasoning_gym")  # count is how many to make, not a cap
        if (generated or self.count) and self.count < self.router_size + self.eval_size + 1:
            raise PersynError(
                f"params.toml: prompts.count ({self.count}) must exceed prompts.router_size + prompts.eval_size "
                f"({self.router_size + self.eval_size}): at least one prompt must be left to route"
            )


@table("embed")
class EmbedConfig:
    model: str
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
        key: _value(_hints(SamplingConfig)[key], value) for key, value in tuned.items()}))


def _student(name: str, mapping: dict[str, Any], train: dict[str, Any], evaluation: dict[str, Any]) -> StudentConfig:
    """A [students.<name>] table; its train/eval subtables override [train]/[eval] key by key."""
    own = {key: value for key, value in mapping.items() if key not in ("train", "eval")}
    return build(StudentConfig, own, name=name, train=build(TrainConfig, {**train, **mapping.get("train", {})}),
                 eval=build(EvalConfig, {**evaluation, **mapping.get("eval", {})}))


MIGRATE_STUDENT = ("[student] is now [students.<name>] (one table per student; the name is used in stage names, "
                   "data/*/<name>/ and metrics/<name>/): rename [student] to [students.student], or give the "
                   "student a name of its own ([a-z0-9_-]+)")


def release_spelling(student: str) -> str:
    """A student's name as it appears in its release's artifact name (GTO allows no underscore)."""
    return student.replace("_", "-").strip("-")


def _same_model(first: str, second: str) -> bool:
    """Two specs for one model: equal, or local: specs naming the same directory."""
    if first.startswith("local:") and second.startswith("local:"):
        return Path(first[6:]).expanduser().resolve() == Path(second[6:]).expanduser().resolve()
    return first == second


def _check_combinations(params: Params) -> None:
    """Settings that are valid alone but not together, caught before any stage computes."""
    spelt: dict[str, str] = {}
    for student in params.students:
        other = spelt.setdefault(release_spelling(student), student)
        if other != student:
            raise PersynError(f"params.toml: students '{other}' and '{student}' would be released under one name "
                              f"({params.assemble.name}-{release_spelling(student)}@vN): rename one of them")
    pairs: dict[str, tuple[str, str]] = {}
    for student in params.students:
        for teacher in params.teachers:
            seen = pairs.setdefault(f"{student}-{teacher}", (student, teacher))
            if seen != (student, teacher):
                raise PersynError(f"params.toml: student '{student}' with teacher '{teacher}' and student '{seen[0]}' "
                                  f"with teacher '{seen[1]}' both name the stages score@{student}-{teacher}: "
                                  "rename one of them")
    for teacher in params.teachers.values():
        same = [s for s, student in params.students.items() if _same_model(student.model, teacher.model)]
        if same and not teacher.self_distillation:
            raise PersynError(f"params.toml: teachers.{teacher.name}.model is student '{same[0]}''s own model "
                              f"({teacher.model}): its answers are the student's, learnable by construction; use "
                              f"another teacher, or set teachers.{teacher.name}.self_distillation = true to mean it")
    verifiable = params.quality.verifiable
    if params.route.fallback and not verifiable:
        raise PersynError("params.toml: route.fallback needs a verifiable quality (quality.kind 'math' or 'verifier'); "
                          "a reward model's score has no pass/fail to fall back on: set route.fallback = 0")
    if params.router.pairs == "verified" and params.quality.kind == "reward_model":
        raise PersynError("params.toml: router.pairs = 'verified' needs a verifiable quality (quality.kind 'math' or "
                          "'verifier'); a reward model's score verifies nothing: set router.pairs = 'all'")
    if params.assemble.unverified == "drop" and not verifiable:
        raise PersynError("params.toml: assemble.unverified = 'drop' needs quality.kind 'math' or 'verifier' (only a "
                          "verified answer can fail verification)")
    if params.quality.kind == "verifier" and params.prompts.source != "reasoning_gym":
        raise PersynError("params.toml: quality.kind = 'verifier' needs prompts.source = 'reasoning_gym' (the prompts "
                          "carry their family's verifier); use quality.kind = 'math' for other sources")
    capped = sorted(n for n, t in params.teachers.items() if t.max_share is not None or t.max_prompts is not None)
    constrained = [f"teachers.{capped[0]}.max_share/max_prompts"] if capped else []
    constrained += ["route.budget"] if params.route.budget else []
    if constrained and params.route.strategy != "persyn":
        raise PersynError(f"params.toml: {constrained[0]} applies to the router's choice (route.strategy = 'persyn'), "
                          f"not to route.strategy = '{params.route.strategy}'")
    fixed = params.route.strategy.removeprefix("fixed:")
    if fixed != params.route.strategy and fixed not in params.teachers:
        raise PersynError(f"params.toml: route.strategy = '{params.route.strategy}' names no configured teacher "
                          f"(configured: {', '.join(sorted(params.teachers))})")


def _prompts_table(mapping: dict[str, Any]) -> dict[str, Any]:
    """[prompts] as the stage uses it: shifted_eval_size applies to builtin:arithmetic, and to another
    source only with shifted_beside_source (a file of your own gets no arithmetic problems unasked)."""
    if mapping["source"] == "builtin:arithmetic" or mapping.get("shifted_beside_source"):
        return mapping
    return {**mapping, "shifted_eval_size": 0}


def _check_engines(params: Params) -> None:
    """Every engine's options, checked as the engine reads them (nothing loads): a wrong option stops
    every stage, not only the one that loads the engine after the others have computed. The quality
    engine is checked where it runs (a reward model) or is given options."""
    from persyn import engines

    uses = [(f"teachers.{n}", t.sampling.engine, t.sampling.engine_options) for n, t in params.teachers.items()]
    uses += [(f"students.{n}", s.engine, s.engine_options) for n, s in params.students.items()]
    quality = params.quality
    if quality.kind == "reward_model" or quality.engine_options:
        uses.append(("quality", quality.engine, quality.engine_options))
    for key, engine, options in uses:
        try:
            engines.answering_engine(engine, options)
        except PersynError as error:
            raise PersynError(f"params.toml: {key}: {str(error).removeprefix('params.toml: ')}") from None


def _check_finite(value: Any, key: str, source: str) -> None:
    """TOML allows nan and inf, and every range check passes them: no key of persyn's means either."""
    if isinstance(value, float) and not math.isfinite(value):
        raise PersynError(f"{source}: {key}: {value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, inner in items:
        _check_finite(inner, f"{key}.{name}" if key else str(name), source)


def _check_local_models(params: Params, source: str) -> None:
    """A local: model directory must exist before any stage computes; relative paths are read from the
    working directory, as the stages resolve them."""
    specs = {"embed.model": params.embed.model, "quality.reward_model": params.quality.reward_model}
    specs |= {f"teachers.{name}.model": teacher.model for name, teacher in params.teachers.items()}
    specs |= {f"students.{name}.model": student.model for name, student in params.students.items()}
    for key, spec in specs.items():
        if spec and spec.startswith("local:") and not Path(spec.removeprefix("local:")).expanduser().is_dir():
            raise PersynError(f"{source}: {key}: {spec}: directory not found")


def parse(raw: dict[str, Any], source: str = "params.toml") -> Params:
    """Validate a parsed params mapping and build the typed configuration."""
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
    _check_combinations(params)
    _check_engines(params)
    return params


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
        _check_local_models(params, str(path))
    return params
