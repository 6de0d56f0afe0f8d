"""The transformers engine: CPU or CUDA, batched generation and padding-safe log-likelihoods.

Generation sorts nothing itself (the caller batches by length), pads on the left and decodes
greedily unless a temperature is set. Sampled decoding is seeded per request with the Gumbel-max
trick, so a request's sample does not depend on which other requests share its batch.
torch and transformers are imported where a model loads: config.load checks these Options in every
stage, which must not pay their import (issue 28).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from persyn.core.chat import prompt_ids, response_tokens, reward_ids, stop_token_ids
from persyn.core.devices import pick_device
from persyn.engines import Backend, Completion, EngineOptions, GenerationRequest, Sampling, Score, ScoreRequest
from persyn.engines import token_completion
from persyn.core.models import ResolvedModel

if TYPE_CHECKING:
    import torch

log = logging.getLogger("persyn.engines.transformers")
T = TypeVar("T")

DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names


@dataclass(frozen=True)
class Options(EngineOptions):
    """dtype "auto" is float32 on the CPU and bfloat16 on CUDA."""

    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, not '{self.dtype}'")

    def answers_depend_on(self) -> dict[str, str]:
        return {} if self.dtype == "auto" else {"dtype": self.dtype}

    def torch_dtype(self, device: str) -> torch.dtype:
        """The dtype to load in: "auto" is float32 on the CPU and bfloat16 on CUDA."""
        import torch

        return getattr(torch, self.dtype if self.dtype in DTYPES else "float32" if device == "cpu" else "bfloat16")


def inference_mode(method: Callable[..., T]) -> Callable[..., T]:
    """torch.inference_mode() as a decorator that imports torch when the method runs, not at import."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        import torch

        with torch.inference_mode():
            return method(*args, **kwargs)

    return wrapped


def answer_tokens(row: list[int], stop_ids: Sequence[int], pad_id: int) -> list[int]:
    """The generated tokens of one batch row: up to and including the first end token, without
    the padding that follows a row finished early (by an end token or a stop string)."""
    for index, token in enumerate(row):
        if token in stop_ids:
            return row[: index + 1]
    while row and row[-1] == pad_id:
        row = row[:-1]
    return row


class SeededSampler:
    """Temperature and top-p, then Gumbel noise from one generator per row: greedy argmax of the
    result is an exact sample, reproducible per request whatever the batch. A logits processor
    (generate calls it), not a LogitsProcessor subclass, so that defining it imports no torch."""

    def __init__(self, sampling: Sampling, seeds: Sequence[int], device: str) -> None:
        import torch

        self.temperature = sampling.temperature
        self.top_p = sampling.top_p
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            ordered, index = scores.sort(dim=-1, descending=True)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative - ordered.softmax(dim=-1) > self.top_p
            scores = scores.masked_fill(drop.scatter(-1, index, drop), float("-inf"))
        uniform = torch.stack([
            torch.rand(scores.shape[-1], generator=generator, device=scores.device) for generator in self.generators
        ])
        return scores - torch.log(-torch.log(uniform.clamp_min(1e-20)))


class TransformersEngine:
    def __init__(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = pick_device(device)
        dtype = options.torch_dtype(self.device)
        log.info("loading %s on %s (%s)", model.identity, self.device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision)
        self.network = AutoModelForCausalLM.from_pretrained(
            model.path, revision=model.revision, dtype=dtype
        ).to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = stop_token_ids(self.tokenizer)

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        return prompt_ids(self.tokenizer, request.messages, request.text, self.model.spec)

    def _pad(self, sequences: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
            ids[row, span] = torch.tensor(sequence, dtype=torch.long)
            mask[row, span] = 1
        return ids.to(self.device), mask.to(self.device)

    @inference_mode
    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        from transformers import LogitsProcessorList

        outputs: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start: start + self.batch_size]
            prompts = [self._prompt_ids(r) for r in batch]
            ids, mask = self._pad(prompts, side="left")
            processors = LogitsProcessorList()
            if sampling.temperature > 0:
                processors.append(SeededSampler(sampling, [r.seed for r in batch], self.device))
            generated = self.network.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=sampling.max_tokens,
                do_sample=False,
                logits_processor=processors,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=list(sampling.stop) or None,
                tokenizer=self.tokenizer if sampling.stop else None,
                top_p=None, top_k=None, temperature=None,
            )
            for prompt, row in zip(prompts, generated[:, ids.shape[1]:].tolist()):
                tokens = answer_tokens(row, self.stop_ids, self.tokenizer.pad_token_id)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                outputs.append(token_completion(text, tokens, self.stop_ids, sampling, len(prompt)))
        return outputs

    @inference_mode
    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        scores: list[Score] = []
        for start in range(0, len(requests), self.batch_size):
            encoded = [response_tokens(self.tokenizer, r.messages, r.response, self.max_length, self.model.spec)
                       for r in requests[start: start + self.batch_size]]
            ids, mask = self._pad([sequence for sequence, _ in encoded], side="right")
            logits = self.network(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            token_logprobs = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            for row, (sequence, response_start) in enumerate(encoded):
                # position t predicts token t+1: response tokens are ids[response_start:len(sequence)]
                mean = token_logprobs[row, response_start - 1: len(sequence) - 1].mean().item()
                scores.append(Score(mean, len(sequence)))
        return scores

    def close(self) -> None:
        release(self)


def release(loaded: TransformersEngine | TransformersRewardModel | TransformersEncoder) -> None:
    """Free a loaded network's memory; a second close is a no-op, as for every other engine."""
    if loaded.__dict__.pop("network", None) is not None and loaded.device == "cuda":
        import torch

        torch.cuda.empty_cache()


class TransformersRewardModel:
    """A sequence classifier scoring a chat (prompt, response); higher is better."""

    def __init__(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model = model
        self.device = pick_device(device)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.model.path, revision=self.model.revision)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.network = AutoModelForSequenceClassification.from_pretrained(
            self.model.path, revision=self.model.revision, num_labels=1,
            dtype=options.torch_dtype(self.device),
        ).to(self.device).eval()
        self.network.config.pad_token_id = self.tokenizer.pad_token_id

    def score(self, pairs: Sequence[tuple[list[dict[str, str]], str]]) -> list[float]:
        """The raw head value (no sigmoid), on the same token ids as the vLLM engine."""
        import torch

        ids = [reward_ids(self.tokenizer, messages, response, self.max_length) for messages, response in pairs]
        encoded = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.network(**encoded).logits
        return logits[:, 0].float().tolist()

    def close(self) -> None:
        release(self)


class TransformersEncoder:
    """A frozen encoder in float32 (the embed stage's): its last hidden states, right-padded."""

    def __init__(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = pick_device(device)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision)
        self.tokenizer.padding_side = "right"  # cls pooling reads the first position
        self.network = AutoModel.from_pretrained(model.path, revision=model.revision,
                                                 dtype=torch.float32).to(self.device).eval()

    def hidden_states(self, texts: Sequence[str]) -> tuple[Any, Any]:
        import torch

        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.network(**encoded).last_hidden_state
        return hidden.float().cpu().numpy(), encoded["attention_mask"].cpu().numpy()

    def close(self) -> None:
        release(self)


class TransformersBackend(Backend):
    Options = Options
    SCORES_LOGLIKELIHOOD = True
    RUNS_REWARD_MODELS = True
    RUNS_ENCODERS = True

    def load(self, model: ResolvedModel, device: str, batch_size: int, max_length: int,
             options: Options) -> TransformersEngine:
        return TransformersEngine(model, device, batch_size, max_length, options)

    def load_reward(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> TransformersRewardModel:
        return TransformersRewardModel(model, device, max_length, options)

    def load_encoder(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> TransformersEncoder:
        return TransformersEncoder(model, device, max_length, options)


BACKEND = TransformersBackend()
