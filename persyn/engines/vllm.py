"""The vLLM offline engine (`vllm.LLM`, GPUs): the engine for real teachers of 7B and up.

Prompts are rendered to token ids by the same code as the transformers engine (persyn/chat.py)
and handed to vLLM as token prompts, so both engines see identical inputs and the learnability
mask is the same function. Learnability asks vLLM for the prompt log-probabilities of
chat_template(prompt) + response and averages the response positions. Reward models run with
runner="pooling" and `LLM.classify`.

vLLM has no CPU wheel and pins its own CUDA torch, so it is the optional `gpu` extra; this module
imports it only inside `load`. Written against the vLLM documentation (LLM.generate with
per-request SamplingParams and seeds, prompt_logprobs, runner="pooling"); its tests
(tests/test_vllm_engine.py) run only where vLLM and a GPU are present.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from persyn.chat import chat_ids, prompt_ids, response_tokens, stop_token_ids
from persyn.engines import Completion, GenerationRequest, Sampling, Score, ScoreRequest, truncate_at_stop
from persyn.errors import PersynError
from persyn.models import ResolvedModel

log = logging.getLogger("persyn.engines.vllm")

SCORES_LOGLIKELIHOOD = True


@dataclass(frozen=True)
class Options:
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
        }


def _open(model: ResolvedModel, device: str, options: Options, **extra: Any) -> tuple[Any, Any]:
    """The vllm.LLM and the Hugging Face tokenizer whose chat template persyn renders with."""
    if device == "cpu":
        raise PersynError(f"{model.spec}: engine 'vllm' runs on GPUs; set device = 'cuda' (or use engine 'transformers')")
    if model.spec.startswith("api:"):
        raise PersynError(f"{model.spec}: an api: model is served by an endpoint; use engine = 'openai'")
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


def _release(llm: Any) -> None:
    """Shut vLLM's engine down and give the GPU memory back, so the next model in this process fits."""
    import torch

    shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if shutdown is not None and hasattr(shutdown, "shutdown"):
        shutdown.shutdown()
    del llm
    gc.collect()
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    except ImportError:
        pass
    else:
        destroy_model_parallel()
        destroy_distributed_environment()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class VllmEngine:
    def __init__(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> None:
        self.model, self.batch_size, self.max_length = model, batch_size, max_length
        self.llm, self.tokenizer = _open(model, device, options)
        self.stop_ids = stop_token_ids(self.tokenizer)

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        return prompt_ids(self.tokenizer, request.messages, request.text, self.model.spec)

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": self._prompt_ids(r)} for r in requests]
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
        from vllm import SamplingParams

        encoded = [response_tokens(self.tokenizer, r.messages, r.response, self.max_length, self.model.spec)
                   for r in requests]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids, _ in encoded],
                                    SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)
        scores = []
        for (ids, start), output in zip(encoded, outputs):
            # prompt_logprobs[t] holds log p(ids[t] | ids[:t]); the actual token is always among them
            values = [output.prompt_logprobs[t][ids[t]].logprob for t in range(start, len(ids))]
            scores.append(Score(sum(values) / len(values), len(ids)))
        return scores

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            _release(self.llm)
            self.llm = None


class VllmRewardModel:
    """A sequence-classification reward model under vLLM's pooling runner. vLLM returns the head's
    activation (a sigmoid for one label), a monotonic transform of the transformers engine's raw
    score; the cache key names the engine, so the two are never mixed."""

    def __init__(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> None:
        self.model, self.max_length = model, max_length
        self.llm, self.tokenizer = _open(model, device, options, runner="pooling")

    def score(self, pairs: Sequence[tuple[list[dict[str, str]], str]]) -> list[float]:
        """Truncated on the right to max_length tokens, as the transformers reward model does."""
        prompts = [{"prompt_token_ids": chat_ids(self.tokenizer, messages + [{"role": "assistant", "content": response}],
                                                 False, self.model.spec)[: self.max_length]}
                   for messages, response in pairs]
        return [float(output.outputs.probs[0]) for output in self.llm.classify(prompts, use_tqdm=False)]

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            _release(self.llm)
            self.llm = None


def load(model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> VllmEngine:
    return VllmEngine(model, device, batch_size, max_length, options)


def load_reward(model: ResolvedModel, device: str, max_length: int, options: Options) -> VllmRewardModel:
    return VllmRewardModel(model, device, max_length, options)
