"""The vLLM engine's own logic, on any machine: what it checks before calling vLLM, how it reads
vLLM's outputs, how it lets the engine go. vLLM cannot be installed here, so the LLM object and
its outputs are planted stand-ins shaped like vLLM 0.33's (vllm/outputs.py, entrypoints/llm.py);
the tokenizers are real."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed
from transformers import AutoTokenizer

from persyn.core import models
from persyn.core.chat import stop_token_ids
from persyn.engines import GenerationRequest, Sampling, ScoreRequest
from persyn.engines.vllm import Options, VllmEngine, VllmRewardModel, check_lengths, reward_value
from persyn.core.errors import PersynError

USER = [{"role": "user", "content": "Ava has 3 coins and buys 4 more. How many coins does Ava have?"}]


class PlantedLLM:
    """Stands in for vllm.LLM: its max_model_len, its engine core's shutdown, and no inference."""

    def __init__(self, max_model_len: int) -> None:
        self.model_config = SimpleNamespace(max_model_len=max_model_len)
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self._shutdown))
        self.owner: object = None
        self.owner_held_at_shutdown: list[object] = []

    def _shutdown(self) -> None:
        self.owner_held_at_shutdown.append(self.owner.llm)

    def generate(self, *_: object, **__: object) -> None:
        raise AssertionError("a batch that cannot fit must not reach vLLM")

    classify = generate


@pytest.fixture(scope="module")
def spec(tiny_models: dict[str, Path]) -> models.ResolvedModel:
    return models.resolve(f"local:{tiny_models['student']}")


def test_an_input_that_does_not_fit_max_model_len_is_one_error_before_vllm(spec: models.ResolvedModel) -> None:
    tokenizer = AutoTokenizer.from_pretrained(spec.path)
    engine = VllmEngine(spec, batch_size=4, max_length=512, llm=PlantedLLM(max_model_len=40), tokenizer=tokenizer)
    long = "3 + 4 = 7. " * 20
    with pytest.raises(PersynError, match=r"does not fit vLLM's max_model_len of 40; set engine_options.max_model_len"):
        engine.loglikelihood([ScoreRequest(USER, "7"), ScoreRequest(USER, long)])
    with pytest.raises(PersynError, match=r"an input of \d+ tokens does not fit vLLM's max_model_len of 40"):
        engine.generate([GenerationRequest(messages=[{"role": "user", "content": long}])], Sampling())
    scorer = VllmRewardModel(spec, max_length=512, llm=PlantedLLM(max_model_len=40), tokenizer=tokenizer)
    with pytest.raises(PersynError, match="max_model_len of 40"):
        scorer.score([(USER, long)])


def test_length_limits_are_vllms() -> None:
    """vllm/v1/engine/input_processor.py: a generating prompt needs length < max_model_len
    (room for one new token), a pooled one length <= max_model_len."""
    check_lengths([[1] * 31, [1] * 5], 32, True, "m")
    check_lengths([[1] * 32], 32, False, "m")
    with pytest.raises(PersynError, match="at least 33"):
        check_lengths([[1] * 32], 32, True, "m")
    with pytest.raises(PersynError, match="at least 33"):
        check_lengths([[1] * 33], 32, False, "m")


def test_a_failed_pooling_request_is_one_error_with_vllms_message() -> None:
    failed = SimpleNamespace(outputs=SimpleNamespace(probs=[]), error=SimpleNamespace(
        code="validation_error", message="The decoder prompt (length 9000) is longer than the maximum model length"))
    with pytest.raises(PersynError, match=r"^rm: vLLM could not score a response: The decoder prompt \(length 9000\)"):
        reward_value(failed, "rm")
    assert reward_value(SimpleNamespace(outputs=SimpleNamespace(probs=[23.5]), error=None), "rm") == 23.5
    assert reward_value(SimpleNamespace(outputs=SimpleNamespace(probs=[-4.0])), "rm") == -4.0  # before `error` existed


def test_close_lets_the_engine_go_and_leaves_the_process_group(spec: models.ResolvedModel, tmp_path: Path) -> None:
    """Detached before the engine core shuts down, then collected; a torch.distributed group the
    stage's process owns is not destroyed."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        llm = PlantedLLM(max_model_len=64)
        engine = llm.owner = VllmEngine(spec, 4, 64, llm, AutoTokenizer.from_pretrained(spec.path))
        held, alive = llm.owner_held_at_shutdown, weakref.ref(llm)
        del llm
        engine.close()
        gc.collect()
        assert held == [None] and alive() is None and engine.llm is None
        engine.close()  # a second close does nothing
        assert held == [None] and torch.distributed.is_initialized()
    finally:
        torch.distributed.destroy_process_group()


def test_stop_tokens_without_an_end_of_sequence_token(spec: models.ResolvedModel) -> None:
    tokenizer = AutoTokenizer.from_pretrained(spec.path)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer) == [end_of_turn]
    tokenizer.eos_token = None
    assert tokenizer.eos_token_id is None and stop_token_ids(tokenizer) == [end_of_turn]


def test_vllm_renders_with_the_tokenizer_persyn_renders_with(spec: models.ResolvedModel) -> None:
    assert Options().llm_arguments(spec)["tokenizer_mode"] == "hf"
