"""The vLLM engine against the transformers engine on the same tiny models, in float32 on one GPU.

vLLM has no CPU wheel: these tests run only where vllm imports and CUDA is present (a GPU
machine with `pip install 'persyn[gpu]'`); elsewhere they are skipped with that reason."""

from pathlib import Path

import pytest
import torch

from persyn import engines, models
from persyn.engines import GenerationRequest, Sampling, ScoreRequest

pytest.importorskip("vllm", reason="vLLM is not installed (GPU machines only: pip install 'persyn[gpu]')")
if not torch.cuda.is_available():
    pytest.skip("vLLM engine tests need a CUDA device", allow_module_level=True)

PAIRS = [([{"role": "user", "content": "Ava has 3 coins and buys 4 more. How many coins?"}], "3 + 4 = 7. The answer is 7."),
         ([{"role": "user", "content": "hi"}], "Ok")]
VLLM_OPTIONS = {"dtype": "float32", "gpu_memory_utilization": 0.3, "enforce_eager": True, "max_model_len": 512}


@pytest.fixture(scope="module")
def student(tiny_models: dict[str, Path]) -> models.ResolvedModel:
    return models.resolve(f"local:{tiny_models['student']}")


def test_loglikelihood_equals_the_transformers_engine(student: models.ResolvedModel) -> None:
    reference = engines.load("transformers", student, "cuda", options={"dtype": "float32"})
    expected = reference.loglikelihood([ScoreRequest(m, r) for m, r in PAIRS])
    reference.close()
    engine = engines.load("vllm", student, "cuda", max_length=512, options=VLLM_OPTIONS)
    try:
        got = engine.loglikelihood([ScoreRequest(m, r) for m, r in PAIRS])
        requests = [GenerationRequest(messages=m, seed=i) for i, (m, _) in enumerate(PAIRS)]
        greedy = engine.generate(requests, Sampling(max_tokens=8))
        sampled = engine.generate(requests, Sampling(temperature=1.0, max_tokens=8))
        alone = engine.generate(requests[1:], Sampling(temperature=1.0, max_tokens=8))
    finally:
        engine.close()
    assert got == pytest.approx(expected, abs=1e-3)
    assert len(greedy) == 2 and all(isinstance(text, str) for text in greedy)
    assert alone == sampled[1:]  # per-request seeds: a sample does not depend on its batch
    assert engine.usage.requests == 2 + 2 + 2 + 1 and engine.usage.prompt_tokens > 0


def test_reward_model_is_a_monotonic_transform_of_the_transformers_score(tiny_models: dict[str, Path]) -> None:
    spec = models.resolve(f"local:{tiny_models['reward']}")
    reference = engines.load_reward("transformers", spec, "cuda", 512, {"dtype": "float32"})
    raw = reference.score(PAIRS)
    reference.close()
    scorer = engines.load_reward("vllm", spec, "cuda", 512, VLLM_OPTIONS)
    try:
        got = scorer.score(PAIRS)
    finally:
        scorer.close()
    assert got == pytest.approx(torch.sigmoid(torch.tensor(raw)).tolist(), abs=1e-3)
