"""The Ray engine on a real local Ray cluster (2 CPUs): the same answers as the single-process engine."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine tests need ray: pip install ray")

from persyn import engines  # noqa: E402
from persyn.core import models  # noqa: E402
from persyn.pipeline import runner, synthesis  # noqa: E402
from persyn.pipeline.cache import RequestCache  # noqa: E402
from persyn.params.config import SamplingConfig, TeacherConfig  # noqa: E402
from persyn.engines import GenerationRequest, Sampling, ScoreRequest, Usage  # noqa: E402
from persyn.core.errors import PersynError  # noqa: E402

PROMPTS = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"What is {i} + {2 * i}?" + " Think." * (i % 3)}]}
           for i in range(8)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local Ray instance for the module; the engines under test find it already running."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # no token written to ~/.ray for a throwaway cluster
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def all_cpus_free(timeout_s: float = 10.0) -> bool:
    """Killed actors give their CPUs back asynchronously."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def teacher(path: Path, engine: str, **options: Any) -> TeacherConfig:
    sampling = SamplingConfig(engine=engine, max_tokens=10, batch_size=4, engine_options=options)
    return TeacherConfig(name="a", model=f"local:{path}", sampling=sampling, system_prompt="Be brief.")


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.slow  # a real local Ray cluster
def test_same_records_as_the_single_process_engine(cluster: None, tiny_models: dict[str, Path], tmp_path: Path,
                                                   temperature: float) -> None:
    """Greedy and sampled, cache keys included: the key names the engine that answers (ray's inner
    engine), so moving a teacher into Ray actors keeps its cache and its per-request seeds."""
    def teacher_on(engine: str, **options: Any) -> TeacherConfig:
        config = teacher(tiny_models["student"], engine, **options)
        return TeacherConfig(config.name, config.model, replace(config.sampling, temperature=temperature),
                             config.system_prompt)

    with RequestCache(tmp_path / "single.sqlite") as cache:
        single, single_stats = synthesis.generate(teacher_on("transformers"), PROMPTS, cache)
    with RequestCache(tmp_path / "ray.sqlite") as cache:
        spread, spread_stats = synthesis.generate(teacher_on("ray", workers=2), PROMPTS, cache)
        assert len(cache.get_many(r["request"] for r in spread)) == len(PROMPTS)  # committed to the cache
    assert spread == single and len({r["response"] for r in single}) > 1
    assert spread_stats.usage == single_stats.usage and spread_stats.usage.prompt_tokens > 0
    with RequestCache(tmp_path / "single.sqlite") as cache:  # a cache filled without Ray serves the Ray teacher
        _, again = synthesis.generate(teacher_on("ray", workers=2), PROMPTS, cache)
    assert (again.computed, again.reused) == (0, len(PROMPTS))
    assert ray.is_initialized() and all_cpus_free()  # synthesis closed the engine; Ray is left running


@pytest.mark.slow  # a real local Ray cluster
def test_sampling_scores_and_usage_match_and_close_kills_the_actors(cluster: None, tiny_models: dict[str, Path]) -> None:
    model = models.resolve(f"local:{tiny_models['student']}")
    asks = [GenerationRequest(messages=p["messages"], seed=100 + i) for i, p in enumerate(PROMPTS)]
    sampling = Sampling(temperature=0.8, top_p=0.9, max_tokens=10)
    scores = [ScoreRequest(p["messages"], f"The answer is {3 * i}.") for i, p in enumerate(PROMPTS[:5])]
    single = engines.load("transformers", model, batch_size=8)
    spread = engines.load("ray", model, batch_size=8, options={"workers": 2})
    actors = list(spread.workers)
    try:
        answers = spread.generate(asks, sampling)
        assert answers == single.generate(asks, sampling)  # texts, finish reasons and token counts
        spread_scores, single_scores = spread.loglikelihood(scores), single.loglikelihood(scores)
        assert [s.logprob for s in spread_scores] == pytest.approx([s.logprob for s in single_scores], abs=1e-5)
        assert Usage.of(spread_scores) == Usage.of(single_scores) and Usage.of(answers).requests == len(asks)
        with pytest.raises(PersynError, match=r"^local:\S+/student: prompt of \d+ tokens exceeds max_length 2048$"):
            spread.loglikelihood([ScoreRequest([{"role": "user", "content": "1 + 1 " * 1500}], "2")])
    finally:
        spread.close()
        single.close()
    spread.close()  # idempotent
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.close.remote(), timeout=30)
    assert ray.is_initialized() and all_cpus_free()


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"cpus_per_worker": 0}, "cpus_per_worker must be > 0"),
    ({"inner": "ray"}, "inner must be another engine"),
    ({"inner": "tgi"}, "unknown engine 'tgi'"),
    ({"inner_options": {"dtype": "int3"}}, "dtype must be auto or one of"),
    ({"inner": "vllm", "gpus_per_worker": 1, "inner_options": {"tensor_parallel_size": 2}}, "gpus_per_worker >= "),
    ({"threads": 4}, "engine 'ray' has no option 'threads'"),
])
def test_bad_options_are_one_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PersynError, match=message):
        engines.parse_options("ray", options)


def test_the_cache_key_names_the_inner_engine_and_what_changes_its_answers() -> None:
    assert runner.engine_identity("ray", {"workers": 8, "address": "auto", "gpus_per_worker": 1}) == {
        "engine": "transformers"}
    assert runner.engine_identity("ray", {"inner_options": {"dtype": "bfloat16"}}) == {
        "engine": "transformers", "engine_options": {"dtype": "bfloat16"}}
    assert runner.engine_identity("ray", {"inner": "vllm", "gpus_per_worker": 2, "inner_options": {
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8}}) == {"engine": "vllm"}
    assert not engines.scores_loglikelihood("ray", {"inner": "openai", "inner_options": {"base_url": "http://x/v1"}})


def test_cuda_without_gpus_is_refused_before_ray_starts(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(PersynError, match="gpus_per_worker > 0"):
        engines.load("ray", models.resolve(f"local:{tiny_models['student']}"), device="cuda")
