"""The vLLM offline engine (`vllm.LLM`, GPUs): the engine for real teachers of 7B and up.

Prompts are rendered to token ids by the same code as the transformers engine (persyn/core/chat.py)
and handed to vLLM as token prompts, so both engines see identical inputs and the learnability
mask is the same function. Learnability asks vLLM for the prompt log-probabilities of
chat_template(prompt) + response and averages the response positions. Reward models run with
runner="pooling" and `LLM.classify`, on the token ids persyn/core/chat.py renders for every engine,
and return the head's raw value (`use_activation=False`), equal to the transformers engine's.

vLLM has no CPU wheel and pins its own CUDA torch, so it is the optional `gpu` extra; this module
imports it only inside the methods that call it, so its own checks run on any machine. Checked
against the source of vLLM 0.33.0 (pyproject's `gpu` extra pins the range); tests/test_vllm_engine.py
runs where vLLM and a GPU are present, and bench/gpu_check.sh runs it on a fresh GPU machine.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from persyn.core.chat import prompt_ids, response_tokens, reward_ids, stop_token_ids
from persyn.engines import Backend, Completion, EngineOptions, GenerationRequest, Sampling, Score, ScoreRequest
from persyn.engines import truncate_at_stop
from persyn.core.errors import PersynError
from persyn.core.models import ResolvedModel

log = logging.getLogger("persyn.engines.vllm")


@dataclass(frozen=True)
class Options(EngineOptions):
    """Passed to vllm.LLM; see the vLLM engine-arguments documentation."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    quantization: str | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1 or self.pipeline_parallel_size < 1:
            raise ValueError("tensor_parallel_size and pipeline_parallel_size must be at least 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ValueError("max_model_len must be at least 16")

    def answers_depend_on(self) -> dict[str, Any]:
        changed = {"dtype": self.dtype} if self.dtype != "auto" else {}
        return changed | ({"quantization": self.quantization} if self.quantization else {})

    def llm_arguments(self, model: ResolvedModel) -> dict[str, Any]:
        return {
            "model": model.path, "revision": model.revision, "tokenizer_revision": model.revision,
            "tensor_parallel_size": self.tensor_parallel_size, "pipeline_parallel_size": self.pipeline_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization, "dtype": self.dtype,
            "quantization": self.quantization, "max_model_len": self.max_model_len,
            "enforce_eager": self.enforce_eager, "trust_remote_code": self.trust_remote_code,
            # the Hugging Face tokenizer persyn renders with, never vLLM's own Mistral tokenizer
            "tokenizer_mode": "hf",
        }


def check_lengths(prompts: Sequence[Sequence[int]], max_model_len: int, generating: bool, model: str) -> None:
    """vLLM rejects a prompt that does not fit max_model_len by aborting the whole call, so one long
    input would fail every request of the batch: check first and name the setting to change.
    A generating runner needs room for at least one new token, a pooling runner does not."""
    longest = max((len(p) for p in prompts), default=0)
    room = max_model_len - 1 if generating else max_model_len
    if longest > room:
        raise PersynError(f"{model}: an input of {longest} tokens does not fit vLLM's max_model_len of {max_model_len}; "
                          f"set engine_options.max_model_len to at least {longest + 1 if generating else longest} "
                          f"(or a smaller max_length, which truncates scored inputs)")


def reward_value(output: Any, model: str) -> float:
    """The head's value in one vLLM ClassificationRequestOutput; a failed request comes back with
    `error` set and no probs, which is one clear error carrying vLLM's message."""
    error = getattr(output, "error", None)
    if error is not None:
        raise PersynError(f"{model}: vLLM could not score a response: {getattr(error, 'message', error)}")
    return float(output.outputs.probs[0])


def _open(model: ResolvedModel, device: str, options: Options, **extra: Any) -> tuple[Any, Any]:
    """The vllm.LLM and the Hugging Face tokenizer whose chat template persyn renders with."""
    try:
        from vllm import LLM
    except ImportError:
        raise PersynError("engine 'vllm' needs vllm (pip install 'persyn[gpu]' on a GPU machine)") from None
    from transformers import AutoTokenizer

    log.info("loading %s with vLLM (tensor parallel %d, pipeline parallel %d)", model.identity,
             options.tensor_parallel_size, options.pipeline_parallel_size)
    tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision,
                                              trust_remote_code=options.trust_remote_code)
    return LLM(**options.llm_arguments(model), **extra), tokenizer


class _Loaded:
    """One vllm.LLM held by a persyn object, and its release."""

    model: ResolvedModel
    llm: Any

    @property
    def max_model_len(self) -> int:
        return int(self.llm.model_config.max_model_len)

    def close(self) -> None:
        """Give the GPU memory back now, so the next model in this process fits. The engine core
        (its own process by default) tears down its own distributed state when shut down; the
        stage's torch.distributed group, if any, is not ours and stays."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VllmEngine(_Loaded):
    def __init__(self, model: ResolvedModel, batch_size: int, max_length: int, llm: Any, tokenizer: Any) -> None:
        self.model, self.batch_size, self.max_length = model, batch_size, max_length
        self.llm, self.tokenizer = llm, tokenizer
        self.stop_ids = stop_token_ids(self.tokenizer)

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        return prompt_ids(self.tokenizer, request.messages, request.text, self.model.spec)

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        prompts = [{"prompt_token_ids": self._prompt_ids(r)} for r in requests]
        check_lengths([p["prompt_token_ids"] for p in prompts], self.max_model_len, True, self.model.spec)
        from vllm import SamplingParams

        params = [
            SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                           stop=list(sampling.stop) or None, stop_token_ids=self.stop_ids,
                           seed=r.seed if sampling.temperature > 0 else None)
            for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        # vLLM's own finish_reason: "stop" (end token or stop string), "length" (max_tokens)
        return [Completion(truncate_at_stop(o.outputs[0].text, sampling.stop),
                           "length" if o.outputs[0].finish_reason == "length" else "stop",
                           len(o.prompt_token_ids), len(o.outputs[0].token_ids)) for o in outputs]

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        encoded = [response_tokens(self.tokenizer, r.messages, r.response, self.max_length, self.model.spec)
                   for r in requests]
        check_lengths([ids for ids, _ in encoded], self.max_model_len, True, self.model.spec)
        from vllm import SamplingParams

        # one new token is the least vLLM generates; nothing is decoded, only prompt log-probs are read
        scoring = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids, _ in encoded], scoring, use_tqdm=False)
        scores = []
        for (ids, start), output in zip(encoded, outputs):
            # prompt_logprobs[t] holds log p(ids[t] | ids[:t]); the actual token is always among them
            values = [output.prompt_logprobs[t][ids[t]].logprob for t in range(start, len(ids))]
            scores.append(Score(sum(values) / len(values), len(ids)))
        return scores


class VllmRewardModel(_Loaded):
    """A sequence-classification reward model under vLLM's pooling runner, scoring the same token ids
    as the transformers engine and returning the same raw value: no sigmoid, which on an fp32 head
    turns every logit above about 17 into exactly 1.0 and ties the best responses."""

    def __init__(self, model: ResolvedModel, max_length: int, llm: Any, tokenizer: Any) -> None:
        self.model, self.max_length = model, max_length
        self.llm, self.tokenizer = llm, tokenizer

    def score(self, pairs: Sequence[tuple[list[dict[str, str]], str]]) -> list[float]:
        """Truncated on the right to max_length tokens, as the transformers reward model does."""
        ids = [reward_ids(self.tokenizer, messages, response, self.max_length) for messages, response in pairs]
        check_lengths(ids, self.max_model_len, False, self.model.spec)
        from vllm import PoolingParams

        outputs = self.llm.classify([{"prompt_token_ids": i} for i in ids],
                                    pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [reward_value(output, self.model.spec) for output in outputs]


class VllmBackend(Backend):
    Options = Options
    SCORES_LOGLIKELIHOOD = True
    RUNS_REWARD_MODELS = True

    def check_model(self, spec: str, device: str, options: Options) -> None:
        if device == "cpu":
            raise PersynError(f"{spec}: engine 'vllm' runs on GPUs; set device = 'cuda' (or use engine 'transformers')")
        super().check_model(spec, device, options)

    def load(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> VllmEngine:
        return VllmEngine(model, batch_size, max_length, *_open(model, device, options))

    def load_reward(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> VllmRewardModel:
        return VllmRewardModel(model, max_length, *_open(model, device, options, runner="pooling"))


BACKEND = VllmBackend()
