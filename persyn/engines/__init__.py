"""One protocol for every inference engine: generate, and score the log-likelihood of a response.

An engine named `x` lives in persyn/engines/x.py and ends with `BACKEND = <a Backend subclass>()`:
  Options                 a frozen dataclass of its own settings (params.toml `engine_options`),
                          an EngineOptions: `answers_depend_on()` (the settings that change answers:
                          the cache key) and, where they apply, `answered_by()` (an engine that wraps
                          another) and `prices()` (an API's USD per million tokens),
  load(...) -> Engine     the one other thing every engine defines;
and, where the Backend defaults (no capability, nothing to check or build) do not fit:
  SCORES_LOGLIKELIHOOD    it can score a given response (learnability needs it),
  STREAMS                 a server answers its requests one by one (its engine is a StreamingEngine);
                          no engine time of persyn's own is measured,
  RUNS_REWARD_MODELS      with load_reward(...) -> RewardScorer,
  RUNS_ENCODERS           with load_encoder(...) -> Encoder (the embed stage's frozen encoder),
  check_model(spec, device, options)   refuse a model spec or device it cannot run (from the params
                          alone: config.parse calls it through persyn/params/rules.py, and load before loading;
                          by default an api: model, which has no weights to load),
  prepare(model, device, options, uses) -> list[Path]   build once per model what it needs (e.g. a
                          converted copy; `persyn models` calls it ahead of a build).
Adding an engine means adding that one file. Engine modules import their heavy dependencies
inside `load`, so options can be checked on a machine that cannot run the engine.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Protocol, Sequence

from persyn.core.errors import PersynError
from persyn.core.models import ResolvedModel

if TYPE_CHECKING:
    import numpy as np

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """A chat request (messages) or a raw completion prompt (text), with its own sampling seed."""

    messages: Messages | None = None
    text: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a GenerationRequest has exactly one of messages or text")


@dataclass(frozen=True)
class ScoreRequest:
    """The log-likelihood of `response` as the assistant turn after `messages`."""

    messages: Messages
    response: str


FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class Completion:
    """One generated answer and what it took, like vLLM's RequestOutput: `finish_reason` is "stop"
    (an end token or a stop string ended it) or "length" (cut at max_tokens: likely unfinished)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    retries: int = 0
    cost_usd: float = 0.0
    timeouts: int = 0  # of the retries, those after a timeout (a slow or overloaded server)
    seconds: float | None = None  # engine time spent on it (persyn.pipeline.synthesis times batches); None: not measured

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, not {self.finish_reason!r}")


@dataclass(frozen=True)
class Score:
    """A response's mean per-token log-probability, and the tokens read to compute it."""

    logprob: float
    tokens: int


@dataclass
class Usage:
    """What answering some requests cost, summed from their results (cached answers cost nothing)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    cost_usd: float = 0.0
    timeouts: int = 0

    def add(self, other: "Usage") -> None:
        for spent in dataclasses.fields(self):
            setattr(self, spent.name, getattr(self, spent.name) + getattr(other, spent.name))

    @classmethod
    def of(cls, results: Sequence["Completion | Score"]) -> "Usage":
        total = cls()
        for result in results:
            if isinstance(result, Completion):
                total.add(cls(1, result.prompt_tokens, result.completion_tokens, result.retries, result.cost_usd,
                              result.timeouts))
            else:
                total.add(cls(1, result.tokens))
        return total


class Engine(Protocol):
    model: ResolvedModel
    batch_size: int

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        """One completion per request, in request order."""

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        """Mean per-token log-probability of each response's tokens under the chat template."""

    def close(self) -> None:
        """Release the model (GPU memory, worker processes)."""


class StreamingEngine(Engine, Protocol):
    """The engine of a Backend that STREAMS: persyn calls `stream` instead of `generate`."""

    def stream(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> Iterator[tuple[int, Completion]]:
        """Each answer, with its position in `requests`, as it completes, so that the cache commits it at once."""


class RewardScorer(Protocol):
    def score(self, pairs: Sequence[tuple[Messages, str]]) -> list[float]:
        """One scalar per (prompt messages, response); higher is better."""

    def close(self) -> None:
        """Release the model."""


class Encoder(Protocol):
    def hidden_states(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The last hidden states (texts × tokens × width, float32, right-padded) and the attention
        mask (texts × tokens, 1 on real tokens), each text cut at the encoder's max_length tokens."""

    def close(self) -> None:
        """Release the model."""


class EngineOptions:
    """The base of every engine's Options (a frozen dataclass of its params.toml `engine_options`);
    the optional parts have their defaults here."""

    def answers_depend_on(self) -> dict[str, Any]:
        """The settings that change answers, as the request-cache key holds them (every engine says)."""
        raise NotImplementedError(f"{type(self).__module__}.Options.answers_depend_on")

    def answered_by(self) -> tuple[str, dict[str, Any]] | None:
        """For an engine that wraps another (ray): the engine that computes the answers and its options,
        so cache keys and capabilities follow it. None: this engine answers itself."""
        return None

    def prices(self) -> tuple[float, float]:
        """USD per million prompt and completion tokens (a priced API's; a local engine costs nothing in USD)."""
        return 0.0, 0.0


class Backend:
    """An engine as persyn drives it: persyn/engines/<name>.py sets Options and defines load in a
    subclass, and overrides the rest only where these defaults (no capability, nothing to refuse,
    nothing to build) do not fit it."""

    Options: ClassVar[type[EngineOptions]]
    SCORES_LOGLIKELIHOOD: ClassVar[bool] = False
    STREAMS: ClassVar[bool] = False
    RUNS_REWARD_MODELS: ClassVar[bool] = False
    RUNS_ENCODERS: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The engine's name in params.toml: its module's (persyn/engines/<name>.py)."""
        return type(self).__module__.rsplit(".", 1)[-1]

    def check_model(self, spec: str, device: str, options: Any) -> None:
        """Refuse, with one PersynError naming the spec, a model or device this engine cannot run;
        decided from the params alone (nothing loads), so config.parse refuses it before any stage.
        By default: an engine runs weights here, and an api: model has none."""
        if spec.startswith("api:"):
            raise PersynError(f"{spec}: an api: model is served by an endpoint; use engine = 'openai'")

    def load(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Any) -> Engine:
        """The loaded model; heavy imports happen here, not at module import."""
        raise NotImplementedError(f"engine '{self.name}' defines no load")

    def load_reward(self, model: ResolvedModel, device: str, max_length: int, options: Any) -> RewardScorer:
        """A reward model (a sequence classifier), on an engine that RUNS_REWARD_MODELS."""
        raise PersynError(f"params.toml: quality.engine = '{self.name}' cannot run a reward model; use transformers or vllm")

    def load_encoder(self, model: ResolvedModel, device: str, max_length: int, options: Any) -> Encoder:
        """A frozen text encoder (the embed stage's), on an engine that RUNS_ENCODERS."""
        raise PersynError(f"params.toml: embed.engine = '{self.name}' cannot run an encoder; use ctranslate2 or transformers")

    def prepare(self, model: ResolvedModel, device: str, options: Any, uses: Sequence[str]) -> list[Path]:
        """Build once what the engine needs for these uses ("generate", "score", "encode"); most need nothing."""
        return []


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut the text at the first stop string (the model may run past it inside a batch)."""
    cut = min((text.find(s) for s in stop if s in text), default=len(text))
    return text[:cut].strip()


def token_completion(text: str, new_tokens: Sequence[int], stop_ids: Sequence[int], sampling: Sampling,
                     prompt_tokens: int) -> Completion:
    """A token-level engine's answer: cut at a stop string, and "length" only when neither an end
    token nor a stop string ended it within max_tokens. `new_tokens` excludes padding."""
    cut = truncate_at_stop(text, sampling.stop)
    ended = any(token in stop_ids for token in new_tokens) or any(s in text for s in sampling.stop)
    finish = "stop" if ended or len(new_tokens) < sampling.max_tokens else "length"
    return Completion(cut, finish, prompt_tokens, len(new_tokens))


def backend(engine: str) -> Backend:
    """The Backend of persyn/engines/<engine>.py, or one error saying what is missing."""
    try:
        return importlib.import_module(f"persyn.engines.{engine}").BACKEND
    except ModuleNotFoundError as error:
        if error.name == f"persyn.engines.{engine}":
            raise PersynError(f"unknown engine '{engine}'") from None
        raise PersynError(f"engine '{engine}' needs '{error.name}', which is not installed") from None


def parse_options(engine: str, options: dict[str, Any]) -> Any:
    """The engine's Options dataclass built from params.toml; an unknown key is one error."""
    cls = backend(engine).Options
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PersynError(f"params.toml: engine '{engine}' has no option '{unknown[0]}' "
                          f"(known: {', '.join(sorted(known)) or 'none'})")
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise PersynError(f"params.toml: engine '{engine}' options: {error}") from None


def answering_engine(engine: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The engine that computes the answers, and its options: a wrapper (ray) names its inner
    engine, so cache keys and capabilities follow the engine that really answers."""
    return parse_options(engine, options).answered_by() or (engine, options)


def scores_loglikelihood(engine: str, options: dict[str, Any] | None = None) -> bool:
    """Whether the engine can score a given response (an HTTP chat endpoint generally cannot)."""
    return backend(answering_engine(engine, options or {})[0]).SCORES_LOGLIKELIHOOD


def times_answers(engine: str, options: dict[str, Any] | None = None) -> bool:
    """Whether persyn measures the engine time of each answer (a batch engine; not a server it
    streams requests to), which a budget in seconds charges."""
    return not backend(answering_engine(engine, options or {})[0]).STREAMS


def check_model(engine: str, options: dict[str, Any], spec: str, device: str) -> None:
    """What the engine refuses about this model spec and device, decided from the params alone."""
    backend(engine).check_model(spec, device, parse_options(engine, options))


def load(
    engine: str, model: ResolvedModel, device: str = "cpu", batch_size: int = 16, max_length: int = 2048,
    options: dict[str, Any] | None = None,
) -> Engine:
    """Load the model with persyn.engines.<engine>, once the engine has accepted model and device."""
    parsed, implementation = _accepted(engine, options, model, device)
    return implementation.load(model, device, batch_size, max_length, parsed)


def _accepted(engine: str, options: dict[str, Any] | None, model: ResolvedModel, device: str,
              capability: str | None = None) -> tuple[Any, Backend]:
    """The engine's parsed options and Backend, once it has accepted model and device; an engine without
    the `capability` (a Backend flag) is left to its load_* method, which says so in one error."""
    parsed, implementation = parse_options(engine, options or {}), backend(engine)
    if capability is None or getattr(implementation, capability):
        implementation.check_model(model.spec, device, parsed)
    return parsed, implementation


def load_encoder(engine: str, model: ResolvedModel, device: str, max_length: int,
                 options: dict[str, Any] | None = None) -> Encoder:
    """Load a frozen text encoder with an engine that can run one."""
    parsed, implementation = _accepted(engine, options, model, device, "RUNS_ENCODERS")
    return implementation.load_encoder(model, device, max_length, parsed)


def prepare(engine: str, model: ResolvedModel, device: str, options: dict[str, Any], uses: Sequence[str]) -> list[Path]:
    """Build once what the answering engine needs for these uses ("generate", "score", "encode"); most need nothing."""
    name, inner = answering_engine(engine, options)
    return backend(name).prepare(model, device, parse_options(name, inner), uses)


def load_reward(engine: str, model: ResolvedModel, device: str, max_length: int,
                options: dict[str, Any] | None = None) -> RewardScorer:
    """Load a reward model (a sequence classifier) with an engine that can run one."""
    parsed, implementation = _accepted(engine, options, model, device, "RUNS_REWARD_MODELS")
    return implementation.load_reward(model, device, max_length, parsed)
