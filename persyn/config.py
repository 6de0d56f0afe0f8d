"""params.toml → typed, validated configuration.

The file is checked against schemas/params.schema.json first (unknown keys, types, ranges), then
turned into frozen dataclasses; any problem is one PersynError naming the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persyn.errors import PersynError
from persyn.schemas import check

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class PromptsConfig:
    source: str
    seed: int
    router_size: int
    eval_size: int
    count: int = 0
    shifted_eval_size: int = 0
    path: str | None = None
    hf: dict[str, str] | None = None
    fields: dict[str, Any] = field(default_factory=lambda: {"prompt": "prompt", "reference": "reference"})

    def __post_init__(self) -> None:
        if self.source in ("jsonl", "parquet") and not self.path:
            raise PersynError(f"params.toml: prompts.path is required when prompts.source = '{self.source}'")
        if self.source == "hf" and not self.hf:
            raise PersynError("params.toml: prompts.hf is required when prompts.source = 'hf'")
        if self.source == "builtin:arithmetic" and self.count < self.router_size + self.eval_size + 1:
            raise PersynError(
                f"params.toml: prompts.count ({self.count}) must exceed router_size + eval_size "
                f"({self.router_size + self.eval_size}) for the built-in generator"
            )


@dataclass(frozen=True)
class EmbedConfig:
    model: str
    batch_size: int = 64
    max_length: int = 128
    device: str = "cpu"


@dataclass(frozen=True)
class SamplingConfig:
    """How one teacher generates; the [generation] table gives the defaults."""

    engine: str = "transformers"
    device: str = "cpu"
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    batch_size: int = 16
    seed: int = 0
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherConfig:
    name: str
    model: str
    sampling: SamplingConfig
    system_prompt: str | None = None
    prompt_template: str | None = None
    max_share: float | None = None
    max_prompts: int | None = None


@dataclass(frozen=True)
class StudentConfig:
    model: str
    engine: str = "transformers"
    device: str = "cpu"
    batch_size: int = 16
    max_length: int = 1024
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QualityConfig:
    kind: str
    reward_model: str | None = None
    engine: str = "transformers"
    device: str = "cpu"
    batch_size: int = 8
    max_length: int = 1024
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RouterConfig:
    alpha: float
    normalisation: str = "zscore"
    tie_margin: float = 0.1
    head: str = "linear"
    hidden: int = 64
    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    validation_fraction: float = 0.25
    refit_on_all: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Budget:
    """A bound on the teachers' spend on routed pool prompts, in USD or completion tokens."""

    amount: float
    unit: str


@dataclass(frozen=True)
class RouteConfig:
    strategy: str = "persyn"
    seed: int = 0
    mix_ratio: float = 0.5
    car_beta: float = 1.0
    fallback: int = 0
    budget: Budget | None = None


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05


@dataclass(frozen=True)
class EvalConfig:
    max_tokens: int = 256
    batch_size: int = 16
    lm_eval_tasks: tuple[str, ...] = ()
    lm_eval_limit: int = 0


@dataclass(frozen=True)
class AssembleConfig:
    name: str = "persyn-dataset"
    shard_size: int = 5000
    license: str = "other"
    drop_truncated: bool = True
    unverified: str = "keep"


@dataclass(frozen=True)
class Params:
    prompts: PromptsConfig
    embed: EmbedConfig
    teachers: dict[str, TeacherConfig]
    student: StudentConfig
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


def _teacher(name: str, table: dict[str, Any], defaults: dict[str, Any]) -> TeacherConfig:
    """[generation] values under the teacher's own; engine options are inherited only by a teacher
    on the default engine (another engine's options would not apply)."""
    sampling = {**defaults, **{k: v for k, v in table.items() if k in SamplingConfig.__dataclass_fields__}}
    sampling["stop"] = tuple(sampling.get("stop", ()))
    if sampling.get("engine", "transformers") == defaults.get("engine", "transformers"):
        sampling["engine_options"] = {**defaults.get("engine_options", {}), **table.get("engine_options", {})}
    return TeacherConfig(
        name=name,
        model=table["model"],
        sampling=SamplingConfig(**sampling),
        system_prompt=table.get("system_prompt"),
        prompt_template=table.get("prompt_template"),
        max_share=table.get("max_share"),
        max_prompts=table.get("max_prompts"),
    )


def _check_combinations(params: Params) -> None:
    """Settings that are valid alone but not together, caught before any stage computes."""
    math = params.quality.kind == "math"
    if params.route.fallback and not math:
        raise PersynError("params.toml: route.fallback needs a verifiable quality (quality.kind = 'math'); "
                          "a reward model's score has no pass/fail to fall back on: set route.fallback = 0")
    if params.assemble.unverified == "drop" and not math:
        raise PersynError("params.toml: assemble.unverified = 'drop' needs quality.kind = 'math' (only a verified "
                          "answer can fail verification)")
    capped = sorted(n for n, t in params.teachers.items() if t.max_share is not None or t.max_prompts is not None)
    constrained = [f"teachers.{capped[0]}.max_share/max_prompts"] if capped else []
    constrained += ["route.budget"] if params.route.budget else []
    if constrained and params.route.strategy != "persyn":
        raise PersynError(f"params.toml: {constrained[0]} applies to the router's choice (route.strategy = 'persyn'), "
                          f"not to route.strategy = '{params.route.strategy}'")


def parse(raw: dict[str, Any], source: str = "params.toml") -> Params:
    """Validate a parsed params mapping and build the typed configuration."""
    check(raw, "params", source)
    defaults = raw.get("generation", {})
    route = dict(raw["route"])
    if "budget" in route:
        route["budget"] = Budget(**route["budget"])
    params = Params(
        prompts=PromptsConfig(**raw["prompts"]),
        embed=EmbedConfig(**raw["embed"]),
        teachers={name: _teacher(name, table, defaults) for name, table in sorted(raw["teachers"].items())},
        student=StudentConfig(**raw["student"]),
        quality=QualityConfig(**raw["quality"]),
        router=RouterConfig(**raw["router"]),
        route=RouteConfig(**route),
        assemble=AssembleConfig(**raw["assemble"]),
        train=TrainConfig(**raw["train"]),
        eval=EvalConfig(**{**raw["eval"], "lm_eval_tasks": tuple(raw["eval"].get("lm_eval_tasks", ()))}),
    )
    _check_combinations(params)
    return params


def load(path: str | Path = "params.toml") -> Params:
    """Read and validate params.toml; every stage calls this before any work."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersynError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PersynError(f"{path}: not valid TOML: {error}") from None
    return parse(raw, str(path))
