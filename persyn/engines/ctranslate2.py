"""The CTranslate2 engine: a C++ runtime for transformer decoders, several times faster than
float32 transformers on a CPU (int8), also on CUDA.

Prompts are rendered to token ids by persyn/core/chat.py, exactly as the transformers engine does, and
learnability scores exactly the tokens chat.response_tokens marks as the response. A model is
converted once per compute type, atomically, under $PERSYN_CACHE_DIR/models/<fingerprint>/ct2-<type>/
(`persyn models` does it ahead of a build). CTranslate2 seeds each worker thread's random
generator once, from the process-wide seed, when the thread first samples: calling
set_random_seed again changes nothing for a generator already loaded. So a sampled request is
answered alone by a freshly loaded generator, seeded with the request's own seed, and a sample
never depends on its batch or on what was sampled before (bench/engine_bench.py measures the
cost). Stop strings end a row as soon as its text holds one.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from persyn.core import claims, devices
from persyn.core.chat import load_tokenizer, prompt_ids, response_tokens, stop_token_ids
from persyn.engines import Backend, Completion, EngineOptions, GenerationRequest, Sampling, Score, ScoreRequest
from persyn.engines import token_completion
from persyn.core.errors import PersynError
from persyn.core.models import ResolvedModel, cache_root

log = logging.getLogger("persyn.engines.ctranslate2")

COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")
# Measured in bench/engine_bench.py: int8 keeps teachers' answers as good at 2.5-4x the speed, but
# moves a small student's log-likelihoods enough to reorder them, and changes most answers of a
# model under SMALL parameters while gaining it least: those generate in float32 on the CPU.
AUTO = {("cpu", "generate"): "int8", ("cpu", "score"): "float32",
        ("cuda", "generate"): "int8_float16", ("cuda", "score"): "bfloat16"}
SMALL = 200_000_000
STATIC_PROMPT = 16  # shared leading tokens worth computing once per batch
CPU_REPLICAS = 2  # "auto" on the CPU: two replicas of half the threads each (bench/batch_bench.py --replicas)
ENCODE = "float32"  # an encoder's vectors as transformers computes them (max difference 2e-7 on the default's)
# Architectures whose score_batch is wrong or fails in CTranslate2 4.x (see README, Engines).
CANNOT_SCORE = {"gemma3_text": "score_batch fails on Gemma 3's sliding-window layers (ValueError: Length mask ...)"}


@dataclass(frozen=True)
class Options(EngineOptions):
    """compute_type is for generation, score_compute_type for log-likelihoods; "auto" is int8 /
    float32 on the CPU and int8_float16 / bfloat16 on CUDA. inter_threads is the number of model
    replicas that compute the parts of one batch at once (0: two on a CPU, one replica computing both
    parts in turn where the thread budget is one thread; one on CUDA); intra_threads the threads of
    each (0: the process's thread budget shared among them); max_batch_size 0 uses the stage's batch_size."""

    compute_type: str = "auto"
    score_compute_type: str = "auto"
    intra_threads: int = 0
    inter_threads: int = 0
    max_batch_size: int = 0

    def __post_init__(self) -> None:
        for name in ("compute_type", "score_compute_type"):
            value = getattr(self, name)
            if value != "auto" and value not in COMPUTE_TYPES:
                raise ValueError(f"{name} must be auto or one of {', '.join(COMPUTE_TYPES)}, not '{value}'")
        for name in ("intra_threads", "inter_threads", "max_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0")

    def answers_depend_on(self) -> dict[str, str]:
        """Both compute types, always: the converted weights and kernels decide the answers (the
        device, which resolves "auto", is in every cache key already)."""
        return {"compute_type": self.compute_type, "score_compute_type": self.score_compute_type}

    def resolved(self, device: str, use: str, parameters: int) -> str:
        chosen = self.compute_type if use == "generate" else self.score_compute_type
        if chosen != "auto":
            return chosen
        return "float32" if (device, use) == ("cpu", "generate") and parameters < SMALL else AUTO[(device, use)]

    def parts(self, device: str) -> int:
        """How many parts a batch is cut into, one per replica: inter_threads, or two on a CPU. Never
        the thread budget: an int8 answer depends on the rows computed with it, and two builds at
        once (a budget of one thread each) must answer as one alone does."""
        return self.inter_threads or (CPU_REPLICAS if device == "cpu" else 1)

    def threads(self, device: str, budget: int) -> tuple[int, int]:
        """(replicas, threads per replica): on 2 cores, two replicas of one thread decode a batch's two
        halves 1.3-1.4x faster than one replica of two threads for two of the default's teachers, 0.96x
        for the one with the longest answers (bench/batch_bench.py --replicas); with a budget of one
        thread, "auto" loads one replica, which computes the two halves in turn."""
        replicas = self.inter_threads or min(self.parts(device), budget)
        return replicas, self.intra_threads or max(1, budget // replicas)


def _import() -> Any:
    try:
        import ctranslate2
    except ModuleNotFoundError:
        raise PersynError("engine 'ctranslate2' needs CTranslate2: pip install ctranslate2") from None
    return ctranslate2


def _device(device: str) -> str:
    return devices.choose(device, _import().get_cuda_device_count() > 0, "CTranslate2")


def _check_local(spec: str) -> None:
    if spec.startswith(("hf:", "api:")):
        raise PersynError(f"{spec}: engine 'ctranslate2' converts local weights; use packaged: or local: "
                          "(download a hub model first and point local: at it)")


def converted(model: ResolvedModel, compute_type: str) -> Path:
    """The model in CTranslate2's format for one compute type, converted on first use, atomically."""
    _check_local(model.spec)
    destination = cache_root() / "models" / model.fingerprint / f"ct2-{compute_type}"
    if (destination / "model.bin").is_file():
        return destination
    ctranslate2 = _import()
    destination.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to CTranslate2 (%s), once", model.identity, compute_type)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".ct2-") as scratch:
        out = Path(scratch) / "model"
        try:
            ctranslate2.converters.TransformersConverter(model.path).convert(str(out), quantization=compute_type)
        except (ValueError, NotImplementedError) as error:
            raise PersynError(f"{model.spec}: CTranslate2 cannot convert this model: {error}") from None
        try:
            out.rename(destination)
        except OSError:  # another process converted it first
            if not (destination / "model.bin").is_file():
                raise
    return destination


def _architecture(model: ResolvedModel) -> str:
    config = json.loads((Path(model.path) / "config.json").read_text())
    return str(config.get("model_type", ""))


def parameters(model: ResolvedModel) -> int:
    """The model's parameter count, read from its safetensors headers (no weights are loaded)."""
    from safetensors import safe_open

    total = 0
    for file in Path(model.path).glob("*.safetensors"):
        with safe_open(str(file), "np") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt of a batch shares (a system prompt, a few-shot template), if
    at least STATIC_PROMPT: CTranslate2 computes them once as its static_prompt instead of once per row,
    and keeps their state for the next batch: 1.11-1.25x for the default's teachers on S with the same
    answers (bench/batch_bench.py --static). Each row keeps one token of its own; a batch of one shares nothing."""
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts)
    shared = next((k for k in range(shortest) if any(p[k] != prompts[0][k] for p in prompts)), shortest)
    shared = min(shared, shortest - 1)
    return shared if shared >= STATIC_PROMPT else 0


class CTranslate2Engine:
    def __init__(self, model: ResolvedModel, device: str, batch_size: int, max_length: int, options: Options) -> None:
        _check_local(model.spec)
        self.model, self.batch_size, self.max_length, self.options = model, batch_size, max_length, options
        self.device = _device(device)
        self.tokenizer = load_tokenizer(model.path)  # tokenizers, not AutoTokenizer: no torch import
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.parameters = parameters(model)
        self.cannot_score = CANNOT_SCORE.get(_architecture(model))  # read once, not per scoring call
        self._generators: dict[str, Any] = {}

    def _generator(self, use: str, fresh: bool = False) -> Any:
        """One ctranslate2.Generator per compute type, loaded on first use; `fresh` loads a new one
        of one replica (whose worker thread will seed its random generator from the current
        process-wide seed: it answers one sampled request)."""
        compute_type = self.options.resolved(self.device, use, self.parameters)
        if fresh or compute_type not in self._generators:
            path = converted(self.model, compute_type)
            replicas, threads = self.options.threads(self.device, claims.threads())
            if fresh:
                replicas, threads = 1, replicas * threads
            log.debug("loading %s on %s (%s, %d x %d threads)", self.model.identity, self.device, compute_type,
                      replicas, threads)
            generator = _import().Generator(str(path), device=self.device, compute_type=compute_type,
                                            intra_threads=threads, inter_threads=replicas)
            if fresh:
                return generator
            self._generators[compute_type] = generator
        return self._generators[compute_type]

    def _split(self, rows: int) -> int:
        """The rows of one part of a batch of `rows` (Options.parts)."""
        return max(1, math.ceil(rows / self.options.parts(self.device)))

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling) -> list[Completion]:
        prompts = [prompt_ids(self.tokenizer, r.messages, r.text, self.model.spec) for r in requests]
        if sampling.temperature > 0:
            rows = []
            for request, prompt in zip(requests, prompts):
                _import().set_random_seed(request.seed % 2**32)
                rows += self._decode(self._generator("generate", fresh=True), [prompt], sampling)
        else:
            generator, step = self._generator("generate"), self.options.max_batch_size or self.batch_size
            rows = [row for start in range(0, len(prompts), step)
                    for row in self._decode(generator, prompts[start: start + step], sampling)]
        completions = []
        for prompt, tokens in zip(prompts, rows):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            completions.append(token_completion(text, tokens, self.stop_ids, sampling, len(prompt)))
        return completions

    def _decode(self, generator: Any, prompts: list[list[int]], sampling: Sampling) -> list[list[int]]:
        """New token ids per prompt (end token included); a row stops once its text holds a stop string."""
        produced: list[list[int]] = [[] for _ in prompts]

        def on_token(step: Any) -> bool:
            produced[step.batch_id].append(step.token_id)
            text = self.tokenizer.decode(produced[step.batch_id], skip_special_tokens=True)
            return any(stop in text for stop in sampling.stop)

        tokens = [self.tokenizer.convert_ids_to_tokens(p) for p in prompts]
        shared = shared_prefix(prompts)
        static = {"static_prompt": tokens[0][:shared], "cache_static_prompt": True} if shared else {}
        results = generator.generate_batch(
            [t[shared:] for t in tokens], max_batch_size=self._split(len(tokens)), max_length=sampling.max_tokens,
            include_prompt_in_result=False, end_token=self.stop_ids, return_end_token=True,
            sampling_topk=1 if sampling.temperature == 0 else 0, sampling_topp=sampling.top_p,
            sampling_temperature=sampling.temperature or 1.0, callback=on_token if sampling.stop else None, **static)
        return [list(result.sequences_ids[0]) for result in results]

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        if self.cannot_score:
            raise PersynError(f"{self.model.spec}: engine 'ctranslate2' cannot score this model "
                              f"({self.cannot_score}); score it with engine = 'transformers'")
        encoded = [response_tokens(self.tokenizer, r.messages, r.response, self.max_length, self.model.spec)
                   for r in requests]
        generator, step = self._generator("score"), self.options.max_batch_size or self.batch_size
        results = [result for start in range(0, len(encoded), step) for result in generator.score_batch(
            [self.tokenizer.convert_ids_to_tokens(ids) for ids, _ in encoded[start: start + step]],
            max_batch_size=self._split(len(encoded[start: start + step])), max_input_length=0)]
        scores = []
        for (ids, start), result in zip(encoded, results):
            # log_probs[t] is log p(ids[t + 1] | ids[: t + 1]): the response is log_probs[start - 1:]
            values = list(result.log_probs)[start - 1:]
            scores.append(Score(sum(values) / len(values), len(ids)))
        return scores

    def close(self) -> None:
        for generator in self._generators.values():
            generator.unload_model()
        self._generators = {}


class CTranslate2Encoder:
    """A frozen encoder (BERT-like) on CTranslate2 in float32, tokenized by its tokenizer.json: the
    embed stage without importing torch or transformers, which is most of its time on a CPU."""

    def __init__(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> None:
        from tokenizers import Tokenizer

        _check_local(model.spec)
        file = Path(model.path) / "tokenizer.json"
        if not file.is_file():
            raise PersynError(f"{model.spec}: engine 'ctranslate2' tokenizes with the model's tokenizer.json, which it "
                              "lacks; set embed.engine = 'transformers'")
        self.tokenizer = Tokenizer.from_file(str(file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.device = _device(device)
        try:
            path = converted(model, ENCODE)
        except PersynError as error:  # an architecture CTranslate2's converter does not know
            raise PersynError(f"{error}; set embed.engine = 'transformers'") from None
        self.encoder = _import().Encoder(str(path), device=self.device, compute_type=ENCODE,
                                         intra_threads=options.intra_threads or claims.threads())

    def hidden_states(self, texts: Sequence[str]) -> tuple[Any, Any]:
        import numpy as np

        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        states = self.encoder.forward_batch(ids).last_hidden_state
        if self.device != "cpu":
            states = states.to_device(_import().Device.cpu)
        hidden = np.array(states, dtype=np.float32)
        mask = np.arange(hidden.shape[1])[None, :] < np.array([len(row) for row in ids])[:, None]
        return hidden, mask.astype(np.int64)

    def close(self) -> None:
        self.encoder = None


class CTranslate2Backend(Backend):
    Options = Options
    SCORES_LOGLIKELIHOOD = True
    RUNS_ENCODERS = True

    def check_model(self, spec: str, device: str, options: Options) -> None:
        _check_local(spec)

    def prepare(self, model: ResolvedModel, device: str, options: Options, uses: Sequence[str]) -> list[Path]:
        """Convert ahead of a build (`persyn models`), for each use ("generate", "score", "encode") the role has."""
        return [converted(model, ENCODE if use == "encode" else options.resolved(_device(device), use, parameters(model)))
                for use in uses]

    def load(self, model: ResolvedModel, device: str, batch_size: int, max_length: int,
             options: Options) -> CTranslate2Engine:
        return CTranslate2Engine(model, device, batch_size, max_length, options)

    def load_encoder(self, model: ResolvedModel, device: str, max_length: int, options: Options) -> CTranslate2Encoder:
        return CTranslate2Encoder(model, device, max_length, options)


BACKEND = CTranslate2Backend()
