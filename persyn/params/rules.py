"""Every params rule that the params alone decide, in one place: settings valid alone but not together.

The schema checks each key by itself (type, range, pattern, required keys and tables); the rules
below check keys against each other, and against what each named engine can do (its Backend in
persyn/engines). One function per rule, each raising one PersynError that names the keys; `check`
runs them all. config.parse runs `check` on every params it builds, so `persyn check` and every
stage refuse a mistake before any work, never mid-build. Nothing here loads a model or reads an artifact.

`local_models` is the one rule that looks beyond the file (a local: directory must exist); config.load
runs it where the build runs. Checks that need data stay where the data is read: caps that leave a
routed prompt without a teacher once max_prompts meets the routed count, and a budget the cheapest
routing exceeds (persyn/pipeline/budget.py: the count and the costs come from the prompts and S's answers);
answers without a measured time under a budget in seconds (budget.measured_seconds: the request
cache); references against quality.kind and each task entry's verifier (persyn/pipeline/prompts.py,
persyn/sources/tasks.py); a fixed: teacher the saved router does not know (persyn/pipeline/route.py);
train.freeze_layers against the model's depth (persyn/pipeline/train.py); what a model's architecture or
length allows an engine (persyn/engines).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from persyn import engines
from persyn.core.errors import PersynError

if TYPE_CHECKING:
    from persyn.params.config import Params

VERIFIABLE = "a verifiable quality (quality.kind 'math' or 'verifier')"


def release_spelling(student: str) -> str:
    """A student's name as it appears in its release's artifact name (GTO allows no underscore)."""
    return student.replace("_", "-").strip("-")


def _same_model(first: str, second: str) -> bool:
    """Two specs for one model: equal, or local: specs naming the same directory."""
    if first.startswith("local:") and second.startswith("local:"):
        return Path(first[6:]).expanduser().resolve() == Path(second[6:]).expanduser().resolve()
    return first == second


def _uses(params: Params) -> Iterator[tuple[str, str, str, dict[str, Any], str | None]]:
    """(key, engine, device, engine options, model spec) of every configured engine use; the quality
    engine where it runs a reward model, or (spec None) where it is only given options."""
    for name, teacher in params.teachers.items():
        sampling = teacher.sampling
        yield f"teachers.{name}", sampling.engine, sampling.device, sampling.engine_options, teacher.model
    for name, student in params.students.items():
        yield f"students.{name}", student.engine, student.device, student.engine_options, student.model
    quality = params.quality
    if quality.kind == "reward_model" or quality.engine_options:
        spec = quality.reward_model if quality.kind == "reward_model" else None
        yield "quality", quality.engine, quality.device, quality.engine_options, spec
    yield "embed", params.embed.engine, params.embed.device, {}, params.embed.model


def _as_key(key: str, error: PersynError) -> PersynError:
    return PersynError(f"params.toml: {key}: {str(error).removeprefix('params.toml: ')}")


# ---- which keys a table needs, given its others

def one_teacher_prompt_form(params: Params) -> None:
    """A teacher is asked as a chat (system_prompt) or as a completion (prompt_template), not both:
    with both, one would be silently ignored."""
    for name, teacher in params.teachers.items():
        if teacher.system_prompt is not None and teacher.prompt_template is not None:
            raise PersynError(f"params.toml: teachers.{name}: give either system_prompt (chat) or prompt_template "
                              "(completion), not both")


def reward_model_named(params: Params) -> None:
    """quality.kind = 'reward_model' scores every answer with quality.reward_model: it must be given."""
    if params.quality.kind == "reward_model" and not params.quality.reward_model:
        raise PersynError("params.toml: quality.reward_model: missing (quality.kind = 'reward_model' scores answers with it)")


def tasks_only_for_reasoning_gym(params: Params) -> None:
    """prompts.tasks lists reasoning-gym families: the reasoning_gym source needs them, no other reads them."""
    prompts = params.prompts
    if (prompts.source == "reasoning_gym") != bool(prompts.tasks):
        raise PersynError("params.toml: prompts.tasks is required when prompts.source = 'reasoning_gym', and only then"
                          if prompts.source == "reasoning_gym" else
                          f"params.toml: prompts.tasks applies to prompts.source = 'reasoning_gym', not '{prompts.source}'")


def reasoning_gym_tasks_exist(params: Params) -> None:
    """Each listed family exists, once, and accepts its config (reasoning-gym builds none of its prompts yet)."""
    if params.prompts.source == "reasoning_gym":
        from persyn.sources import tasks

        tasks.check_tasks(params.prompts.tasks or ())


def file_source_has_path(params: Params) -> None:
    """A jsonl or parquet source is read from prompts.path."""
    if params.prompts.source in ("jsonl", "parquet") and not params.prompts.path:
        raise PersynError(f"params.toml: prompts.path is required when prompts.source = '{params.prompts.source}'")


def hub_source_has_dataset(params: Params) -> None:
    """An hf source is read from the dataset prompts.hf names."""
    if params.prompts.source == "hf" and not params.prompts.hf:
        raise PersynError("params.toml: prompts.hf is required when prompts.source = 'hf'")


def prompts_left_to_route(params: Params) -> None:
    """After S (router_size) and the eval split, at least one prompt must remain for the pool. A
    generated source makes prompts.count prompts; for a file, count is a cap (0: none) and the file's
    own size is checked when it is read."""
    prompts = params.prompts
    generated = prompts.source in ("builtin:arithmetic", "reasoning_gym")
    if (generated or prompts.count) and prompts.count < prompts.router_size + prompts.eval_size + 1:
        raise PersynError(
            f"params.toml: prompts.count ({prompts.count}) must exceed prompts.router_size + prompts.eval_size "
            f"({prompts.router_size + prompts.eval_size}): at least one prompt must be left to route"
        )


# ---- names that must stay apart

def release_names_distinct(params: Params) -> None:
    """A release's name spells '_' as '-': two students may not share one release name."""
    spelt: dict[str, str] = {}
    for student in params.students:
        other = spelt.setdefault(release_spelling(student), student)
        if other != student:
            raise PersynError(f"params.toml: students '{other}' and '{student}' would be released under one name "
                              f"({params.assemble.name}-{release_spelling(student)}@vN): rename one of them")


def stage_names_distinct(params: Params) -> None:
    """The stages of a (student, teacher) pair are named <student>-<teacher>: no two pairs may join alike."""
    pairs: dict[str, tuple[str, str]] = {}
    for student in params.students:
        for teacher in params.teachers:
            seen = pairs.setdefault(f"{student}-{teacher}", (student, teacher))
            if seen != (student, teacher):
                raise PersynError(f"params.toml: student '{student}' with teacher '{teacher}' and student '{seen[0]}' "
                                  f"with teacher '{seen[1]}' both name the stages score@{student}-{teacher}: "
                                  "rename one of them")


def teacher_is_not_the_student(params: Params) -> None:
    """A teacher on a student's own model gives answers learnable by construction: refused unless
    self_distillation says it is meant."""
    for teacher in params.teachers.values():
        same = [s for s, student in params.students.items() if _same_model(student.model, teacher.model)]
        if same and not teacher.self_distillation:
            raise PersynError(f"params.toml: teachers.{teacher.name}.model is student '{same[0]}''s own model "
                              f"({teacher.model}): its answers are the student's, learnable by construction; use "
                              f"another teacher, or set teachers.{teacher.name}.self_distillation = true to mean it")


# ---- what needs a verifiable quality

def fallback_needs_verification(params: Params) -> None:
    """The fallback asks the next teacher when an answer fails verification; a reward model's score never fails."""
    if params.route.fallback and not params.quality.verifiable:
        raise PersynError(f"params.toml: route.fallback needs {VERIFIABLE}; a reward model's score has no pass/fail "
                          "to fall back on: set route.fallback = 0")


def verified_pairs_need_verification(params: Params) -> None:
    """router.pairs = 'verified' keeps pairs whose winner verified right; a reward model verifies nothing."""
    if params.router.pairs == "verified" and not params.quality.verifiable:
        raise PersynError(f"params.toml: router.pairs = 'verified' needs {VERIFIABLE}; a reward model's score "
                          "verifies nothing: set router.pairs = 'all'")


def dropping_unverified_needs_verification(params: Params) -> None:
    """assemble.unverified = 'drop' drops answers that failed verification: only a verified answer can fail."""
    if params.assemble.unverified == "drop" and not params.quality.verifiable:
        raise PersynError("params.toml: assemble.unverified = 'drop' needs quality.kind 'math' or 'verifier' (only a "
                          "verified answer can fail verification)")


def verifier_needs_reasoning_gym(params: Params) -> None:
    """quality.kind = 'verifier' runs each prompt's family verifier, which only reasoning-gym prompts carry."""
    if params.quality.kind == "verifier" and params.prompts.source != "reasoning_gym":
        raise PersynError("params.toml: quality.kind = 'verifier' needs prompts.source = 'reasoning_gym' (the prompts "
                          "carry their family's verifier); use quality.kind = 'math' for other sources")


# ---- routing

def limits_need_the_router(params: Params) -> None:
    """Caps and a budget constrain the router's choice; another strategy would ignore them silently."""
    capped = sorted(n for n, t in params.teachers.items() if t.max_share is not None or t.max_prompts is not None)
    constrained = [f"teachers.{capped[0]}.max_share/max_prompts"] if capped else []
    constrained += ["route.budget"] if params.route.budget else []
    if constrained and params.route.strategy != "persyn":
        raise PersynError(f"params.toml: {constrained[0]} applies to the router's choice (route.strategy = 'persyn'), "
                          f"not to route.strategy = '{params.route.strategy}'")


def shares_cover_every_prompt(params: Params) -> None:
    """Every routed prompt needs a teacher: when every teacher has a max_share, the shares must sum
    to 1 at least (with max_prompts caps the routed count decides, at route time: budget.capacities)."""
    shares = [t.max_share for t in params.teachers.values()]
    if all(share is not None for share in shares) and sum(shares) < 1:
        raise PersynError(f"params.toml: teachers' max_share values sum to {sum(shares):g}, under 1: some routed "
                          "prompts would have no teacher; raise a cap so that every prompt has a teacher")


def fixed_strategy_names_a_teacher(params: Params) -> None:
    """route.strategy = 'fixed:<teacher>' sends every prompt to that teacher: it must be configured."""
    fixed = params.route.strategy.removeprefix("fixed:")
    if fixed != params.route.strategy and fixed not in params.teachers:
        raise PersynError(f"params.toml: route.strategy = '{params.route.strategy}' names no configured teacher "
                          f"(configured: {', '.join(sorted(params.teachers))})")


# ---- engines: what each named engine accepts and can do (persyn/engines, Backend)

def engine_options_valid(params: Params) -> None:
    """Every engine's options, checked as the engine reads them (nothing loads): a wrong option stops
    every stage, not only the one that loads the engine after the others have computed."""
    for key, engine, _, options, _ in _uses(params):
        try:
            engines.answering_engine(engine, options)
        except PersynError as error:
            raise _as_key(key, error) from None


def reward_model_engine_runs_one(params: Params) -> None:
    """A reward model is a sequence classifier: only an engine that RUNS_REWARD_MODELS loads one."""
    quality = params.quality
    if quality.kind == "reward_model" and not engines.backend(quality.engine).RUNS_REWARD_MODELS:
        raise PersynError(f"params.toml: quality.engine = '{quality.engine}' cannot run a reward model; "
                          "use transformers or vllm")


def embed_engine_runs_encoders(params: Params) -> None:
    """The embed stage runs a frozen encoder: only an engine that RUNS_ENCODERS loads one."""
    try:
        implementation = engines.backend(params.embed.engine)
    except PersynError as error:  # an unknown engine, or one whose package is missing
        raise _as_key("embed.engine", error) from None
    if not implementation.RUNS_ENCODERS:
        raise PersynError(f"params.toml: embed.engine = '{params.embed.engine}' cannot run an encoder; "
                          "use ctranslate2 or transformers")


def students_score_loglikelihoods(params: Params) -> None:
    """Learnability is the student's log-likelihood of each answer: the student's engine must score one."""
    for name, student in params.students.items():
        if not engines.scores_loglikelihood(student.engine, student.engine_options):
            raise PersynError(
                f"params.toml: students.{name}.engine = '{student.engine}' cannot score log-likelihoods of a given "
                "response, which learnability needs; run the student on transformers, vllm, ctranslate2 or ray")


def seconds_budget_is_timed(params: Params) -> None:
    """A budget in seconds charges the engine time persyn measures per answer: every teacher must run on
    a batch engine, not a server it streams requests to."""
    if params.route.budget is None or params.route.budget.unit != "seconds":
        return
    untimed = sorted(n for n, t in params.teachers.items()
                     if not engines.times_answers(t.sampling.engine, t.sampling.engine_options))
    if untimed:
        raise PersynError(f"params.toml: route.budget.unit = 'seconds' charges the engine time persyn measures per "
                          f"answer, and teacher {untimed[0]}'s engine ({params.teachers[untimed[0]].sampling.engine}) "
                          "is a server it cannot time: use unit 'usd' or 'tokens'")


def engines_run_their_models(params: Params) -> None:
    """Each engine accepts its model spec and device (an api: model needs the openai engine, vllm a
    GPU, CTranslate2 local weights): Backend.check_model, before a stage loads anything."""
    for key, engine, device, options, spec in _uses(params):
        if spec is not None:
            try:
                engines.check_model(engine, options, spec, device)
            except PersynError as error:
                raise _as_key(key, error) from None


def lm_router_backbone_has_weights(params: Params) -> None:
    """router.head = 'lm' fine-tunes router.backbone: a model behind an endpoint has no weights to tune."""
    if params.router.head == "lm" and params.router.backbone.startswith("api:"):
        raise PersynError(f"params.toml: router.backbone: {params.router.backbone} is behind an endpoint and cannot "
                          "be fine-tuned; name a packaged:, hf: or local: model")


RULES: tuple[Callable[[Params], None], ...] = (
    one_teacher_prompt_form, reward_model_named, tasks_only_for_reasoning_gym, reasoning_gym_tasks_exist,
    file_source_has_path, hub_source_has_dataset, prompts_left_to_route,
    release_names_distinct, stage_names_distinct, teacher_is_not_the_student,
    fallback_needs_verification, verified_pairs_need_verification, dropping_unverified_needs_verification,
    verifier_needs_reasoning_gym,
    limits_need_the_router, shares_cover_every_prompt, fixed_strategy_names_a_teacher,
    embed_engine_runs_encoders, engine_options_valid, reward_model_engine_runs_one, students_score_loglikelihoods,
    seconds_budget_is_timed, engines_run_their_models, lm_router_backbone_has_weights,
)


def check(params: Params) -> None:
    """Run every rule, in order (a table's own keys first; engines last: their options, what each can
    do, then the models and devices they are given); the first broken one raises."""
    for rule in RULES:
        rule(params)


def local_models(params: Params, source: str = "params.toml") -> None:
    """A local: model directory must exist before any stage computes; relative paths are read from the
    working directory, as the stages resolve them. Run where the build runs (config.load)."""
    specs = {"embed.model": params.embed.model, "quality.reward_model": params.quality.reward_model}
    specs |= {f"teachers.{name}.model": teacher.model for name, teacher in params.teachers.items()}
    specs |= {f"students.{name}.model": student.model for name, student in params.students.items()}
    if params.router.head == "lm":
        specs["router.backbone"] = params.router.backbone
    for key, spec in specs.items():
        if spec and spec.startswith("local:") and not Path(spec.removeprefix("local:")).expanduser().is_dir():
            raise PersynError(f"{source}: {key}: {spec}: directory not found")
