"""The Ray engine: another persyn engine in a pool of long-lived Ray actors, on one machine or many.

Each actor loads the inner engine once ("transformers" on CPUs, "vllm" on a GPU cluster). Every
generate/loglikelihood call splits its requests into contiguous chunks, one per actor, runs them
in parallel and returns the answers in request order; run_cached commits after each call, so
batch_size is the number of requests per committed step (say workers x per-actor batch), and each
actor's inner engine gets batch_size / workers.

Why actors and not Ray Data (ray.data.llm / map_batches): a Ray Data pipeline creates its actors
for one dataset execution and tears them down after it, so running one per committed batch would
reload the model every batch, and one execution over every request would bypass the per-batch
commits of the request cache. The actors here live as long as the engine.

The workers must be able to import persyn and read the model path the driver resolved: a local
cluster inherits this venv; on a remote cluster install persyn (and the model) on every node.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from persyn import engines
from persyn.engines import Backend, Completion, EngineOptions, GenerationRequest, Sampling, Score, ScoreRequest
from persyn.core.errors import PersynError
from persyn.core.models import ResolvedModel

log = logging.getLogger("persyn.engines.ray")

CLOSE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Options(EngineOptions):
    """address None lets Ray find a cluster (RAY_ADDRESS, a `ray start` on this machine) or start
    one; "local" always starts one; "auto" or "ray://head:10001" connects to a running cluster."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    inner: str = "transformers"
    inner_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, not {self.workers!r}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, not {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, not {self.gpus_per_worker}")
        if self.inner == "ray":
            raise ValueError("inner must be another engine than 'ray'")
        inner = engines.parse_options(self.inner, self.inner_options)
        if self.inner == "vllm" and self.gpus_per_worker < inner.tensor_parallel_size * inner.pipeline_parallel_size:
            raise ValueError("inner 'vllm' needs gpus_per_worker >= tensor_parallel_size x pipeline_parallel_size")

    def answered_by(self) -> tuple[str, dict[str, Any]]:
        """The engine that computes the answers: the cache keys of a model moved into Ray actors
        stay those of its inner engine, so nothing it answered before is generated again."""
        return self.inner, self.inner_options

    def answers_depend_on(self) -> dict[str, Any]:
        return engines.parse_options(self.inner, self.inner_options).answers_depend_on()


class Worker:
    """One inner engine in one Ray actor; each call returns its answers (results carry their cost)."""

    def __init__(self) -> None:
        self.engine: engines.Engine | None = None

    def load(self, inner: str, model: ResolvedModel, device: str, batch_size: int, max_length: int,
             options: dict[str, Any]) -> str:
        """Load the inner engine; the node's name comes back for the log."""
        host = socket.gethostname()
        if model.spec.startswith(("local:", "packaged:")) and not Path(model.path).is_dir():
            raise PersynError(f"{model.spec}: {model.path} is not on Ray node {host}; "
                              "every node needs the model at the same path")
        self.engine = engines.load(inner, model, device, batch_size, max_length, options)
        return host

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        assert self.engine is not None
        return self.engine.generate(requests, sampling)

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        assert self.engine is not None
        return self.engine.loglikelihood(requests)

    def close(self) -> None:
        """Release the inner engine, then end this actor: the caller's ray.get sees the actor's death
        (RayActorError) only once the process is gone, so closing waits for the resources to be free."""
        if self.engine is not None:
            self.engine.close()
        import_ray().actor.exit_actor()


def import_ray() -> ModuleType:
    """Ray is imported here, not at module top, so persyn (and these options) work without it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise PersynError("engine 'ray' needs Ray: pip install 'ray[default]'") from None
    return ray


class RayEngine:
    def __init__(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> None:
        self.ray = import_ray()
        self.model, self.batch_size = model, batch_size
        self.inner = options.inner
        self.owns_ray = not self.ray.is_initialized()
        if self.owns_ray:
            self.ray.init(address=options.address)
        where = (options.address or "found or started") if self.owns_ray else "already initialised"
        log.info("ray (%s): %d workers x (%g CPU, %g GPU), each running %s on %s", where, options.workers,
                 options.cpus_per_worker, options.gpus_per_worker, options.inner, device)
        total = self.ray.cluster_resources()
        if (total.get("CPU", 0) < options.workers * options.cpus_per_worker
                or total.get("GPU", 0) < options.workers * options.gpus_per_worker):
            log.warning("ray: the cluster has %g CPU and %g GPU now, fewer than the workers need: loading waits "
                        "until an autoscaler adds nodes (or forever)", total.get("CPU", 0), total.get("GPU", 0))
        actor = self.ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker)(Worker)
        self.workers: list[Any] = [actor.remote() for _ in range(options.workers)]
        per_worker = -(-batch_size // options.workers)
        try:
            hosts = self._get([w.load.remote(options.inner, model, device, per_worker, max_length,
                                             options.inner_options) for w in self.workers])
        except BaseException:
            self.close()
            raise
        log.info("ray: %s loaded on %s", model.identity, ", ".join(sorted(set(hosts))))

    def _get(self, refs: list[Any]) -> list[Any]:
        """ray.get; a PersynError raised on a worker comes back as one, its message without Ray's traceback."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, PersynError):
                raise PersynError(str(error.cause)) from None
            raise

    def _scatter(self, method: str, requests: Sequence[Any], *args: Any) -> list[Any]:
        """Contiguous chunks (run_cached sorted them by length), one per worker, answers in order."""
        if not requests:
            return []
        size = -(-len(requests) // len(self.workers))
        refs = [getattr(worker, method).remote(requests[start: start + size], *args)
                for worker, start in zip(self.workers, range(0, len(requests), size))]
        answers: list[Any] = []
        for chunk in self._get(refs):
            answers.extend(chunk)
        return answers

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        return self._scatter("generate", requests, sampling)

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        if not engines.scores_loglikelihood(self.inner):
            raise PersynError(f"engine 'ray' runs '{self.inner}', which cannot score log-likelihoods")
        return self._scatter("loglikelihood", requests)

    def close(self) -> None:
        """Close the actors and wait until each has exited (one that has not within CLOSE_TIMEOUT_S is
        killed); shut Ray down only if this engine started it. Idempotent."""
        closing = [(worker, worker.close.remote()) for worker in self.workers]
        deadline = time.monotonic() + CLOSE_TIMEOUT_S  # one wait for all, not one per worker
        for worker, closed in closing:
            try:
                self.ray.get(closed, timeout=max(0.0, deadline - time.monotonic()))
            except self.ray.exceptions.RayActorError:
                continue  # the actor exited, as Worker.close asks
            except self.ray.exceptions.RayError as error:
                log.warning("ray: closing a worker failed, killing it: %s", error)
            self.ray.kill(worker)
        self.workers = []
        if self.owns_ray:
            self.ray.shutdown()
            self.owns_ray = False


class RayBackend(Backend):
    """Capabilities are the inner engine's (engines.answering_engine follows answered_by), except that
    the actors answer in batches: nothing streams from here."""

    Options = Options

    def check_model(self, spec: str, device: str, options: Options) -> None:
        if device == "cuda" and options.gpus_per_worker == 0:
            raise PersynError("device = 'cuda' on engine 'ray' needs engine_options.gpus_per_worker > 0")
        engines.check_model(options.inner, options.inner_options, spec, device)

    def load(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> RayEngine:
        return RayEngine(model, device, batch_size, max_length, options)


BACKEND = RayBackend()
