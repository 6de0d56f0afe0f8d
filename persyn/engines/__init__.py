"""One protocol for every inference engine: generate, and score the log-likelihood of a response.

An engine named `x` lives in persyn/engines/x.py and exposes `load(model, device, batch_size,
max_length) -> Engine`; adding an engine means adding that one file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, Sequence

from persyn.errors import PersynError
from persyn.models import ResolvedModel

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


class Engine(Protocol):
    model: ResolvedModel
    batch_size: int

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[str]:
        """One completion per request, in request order."""

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Mean per-token log-probability of each response's tokens under the chat template."""

    def close(self) -> None:
        """Release the model (GPU memory, worker processes)."""


def load(
    engine: str, model: ResolvedModel, device: str = "cpu", batch_size: int = 16, max_length: int = 2048
) -> Engine:
    """Import persyn.engines.<engine> and load the model with it."""
    try:
        module = importlib.import_module(f"persyn.engines.{engine}")
    except ModuleNotFoundError as error:
        if error.name == f"persyn.engines.{engine}":
            raise PersynError(f"unknown engine '{engine}'") from None
        raise PersynError(f"engine '{engine}' needs '{error.name}', which is not installed") from None
    return module.load(model, device=device, batch_size=batch_size, max_length=max_length)
