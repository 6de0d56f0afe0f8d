"""The vLLM engine against the transformers engine on the same tiny models, in float32 on one GPU.

vLLM has no CPU wheel: these tests run only where vllm imports and CUDA is present (a GPU
machine with `pip install 'persyn[gpu]'`, or bench/gpu_check.sh); elsewhere they are skipped with
that reason. The models have head size 32: in float32 vLLM has no attention backend for less.
What runs without vLLM is in tests/test_vllm_checks.py."""

from pathlib import Path

import pytest
import torch

from persyn import engines
from persyn.core import models
from persyn.engines import GenerationRequest, Sampling, ScoreRequest
from persyn.core.errors import PersynError
from persyn.testing import tiny

pytest.importorskip("vllm", reason="vLLM is not installed (GPU machines only: pip install 'persyn[gpu]')")
if not torch.cuda.is_available():
    pytest.skip("vLLM engine tests need a CUDA device", allow_module_level=True)

PAIRS = [([{"role": "user", "content": "Ava has 3 coins and buys 4 more. How many coins?"}], "3 + 4 = 7. The answer is 7."),
         ([{"role": "user", "content": "hi"}], "Ok")]
VLLM_OPTIONS = {"dtype": "float32", "gpu_memory_utilization": 0.3, "enforce_eager": True, "max_model_len": 512}
GIB = 2**30


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> models.ResolvedModel:
    return models.resolve(f"local:{tiny.causal_lm(tmp_path_factory.mktemp('vllm') / 'student', seed=0, vllm=True)}")


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


def test_reward_model_gives_the_raw_transformers_score(tmp_path: Path) -> None:
    """A head scaled far past a sigmoid's range: vLLM's default activation would return 1.0 (or 0.0)
    for all of them; the raw score keeps them apart and equals the transformers engine's."""
    spec = models.resolve(f"local:{tiny.reward_model(tmp_path / 'reward', vllm=True, scale=300.0)}")
    reference = engines.load_reward("transformers", spec, "cuda", 512, {"dtype": "float32"})
    raw = reference.score(PAIRS)
    reference.close()
    assert min(abs(value) for value in raw) > 17
    scorer = engines.load_reward("vllm", spec, "cuda", 512, VLLM_OPTIONS)
    try:
        got = scorer.score(PAIRS)
    finally:
        scorer.close()
    assert got == pytest.approx(raw, rel=1e-4, abs=1e-3)


def test_one_long_input_is_one_clear_error_and_the_engine_still_answers(student: models.ResolvedModel) -> None:
    engine = engines.load("vllm", student, "cuda", max_length=512, options={**VLLM_OPTIONS, "max_model_len": 32})
    try:
        with pytest.raises(PersynError, match="does not fit vLLM's max_model_len of 32"):
            engine.loglikelihood([ScoreRequest(m, r * 20) for m, r in PAIRS])
        assert len(engine.loglikelihood([ScoreRequest(PAIRS[1][0], "Ok")])) == 1
    finally:
        engine.close()


def test_close_gives_the_gpu_memory_back(student: models.ResolvedModel) -> None:
    free_before = torch.cuda.mem_get_info()[0]
    engine = engines.load("vllm", student, "cuda", max_length=512, options=VLLM_OPTIONS)
    assert torch.cuda.mem_get_info()[0] < free_before - 2 * GIB  # the KV cache took its share of the GPU
    engine.close()
    assert torch.cuda.mem_get_info()[0] > free_before - GIB
