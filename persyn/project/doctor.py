"""`persyn doctor`: does every configured engine load and answer one request, on this machine?

One command to run on a new GPU box or against a new endpoint before a long build: each teacher
generates one answer, the student scores one log-likelihood, the reward model (if any) scores one
pair and the embedder embeds one prompt. Nothing is cached and no artifact is written.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from persyn import engines
from persyn.pipeline import embed
from persyn.params.config import Params, StudentConfig
from persyn.engines import GenerationRequest, Sampling, ScoreRequest
from persyn.core.models import resolve
from persyn.pipeline.synthesis import teacher_payloads

log = logging.getLogger("persyn.doctor")

PROBE = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}]
PROBE_ANSWER = "3 + 4 = 7. The answer is 7."


@dataclass(frozen=True)
class Finding:
    role: str
    engine: str
    device: str
    model: str
    ok: bool
    seconds: float
    detail: str


def environment() -> list[str]:
    """Versions and accelerators, so a failure report says what the machine had."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    lines = [f"torch {torch.__version__}; CUDA: {', '.join(gpus) or 'no device'}"]
    for package in ("transformers", "vllm", "ray"):
        try:
            lines.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{package} not installed")
    return lines


def _teacher_probe(params: Params, name: str) -> Callable[[], str]:
    teacher = params.teachers[name]
    sampling = teacher.sampling

    def probe() -> str:
        model = resolve(teacher.model)
        payload = teacher_payloads(teacher, model, [PROBE])[0]
        request = GenerationRequest(messages=payload.get("messages"), text=payload.get("text"), seed=sampling.seed)
        with closing(engines.load(sampling.engine, model, sampling.device, 1, options=sampling.engine_options)) as engine:
            answer = engine.generate([request], Sampling(sampling.temperature, sampling.top_p, 32, sampling.stop))[0]
        return f"answered {answer.text[:60]!r} ({answer.finish_reason})"

    return probe


def _student_probe(student: StudentConfig) -> Callable[[], str]:

    def probe() -> str:
        model = resolve(student.model, student.chat_template)
        with closing(engines.load(student.engine, model, student.device, 1, student.max_length,
                                  student.engine_options)) as engine:
            value = engine.loglikelihood([ScoreRequest(PROBE, PROBE_ANSWER)])[0]
        return f"log-likelihood {value.logprob:.3f} per token"

    return probe


def _reward_probe(params: Params) -> Callable[[], str]:
    quality = params.quality

    def probe() -> str:
        with closing(engines.load_reward(quality.engine, resolve(str(quality.reward_model)), quality.device,
                                         quality.max_length, quality.engine_options)) as scorer:
            return f"reward {scorer.score([(PROBE, PROBE_ANSWER)])[0]:.3f}"

    return probe


def _embed_probe(params: Params) -> Callable[[], str]:
    def probe() -> str:
        vectors, _ = embed.encode([PROBE[0]["content"]], params.embed)
        return f"{vectors.shape[1]}-dimensional vector"

    return probe


def run(params: Params) -> list[Finding]:
    """Every probe, each isolated: one failure is reported and the others still run."""
    probes: list[tuple[str, str, str, str, Callable[[], str]]] = [
        (f"teacher {name}", t.sampling.engine, t.sampling.device, t.model, _teacher_probe(params, name))
        for name, t in params.teachers.items()
    ]
    probes += [(f"student {name}", s.engine, s.device, s.model,
                _student_probe(s)) for name, s in params.students.items()]
    if params.quality.kind == "reward_model":
        quality = params.quality
        probes.append(("reward model", quality.engine, quality.device, str(quality.reward_model), _reward_probe(params)))
    probes.append(("embed", params.embed.engine, params.embed.device, params.embed.model, _embed_probe(params)))
    findings = []
    for role, engine, device, model, probe in probes:
        start = time.perf_counter()
        try:
            ok, detail = True, probe()
        except Exception as error:  # noqa: BLE001 - the doctor reports any failure (OOM, HTTP, driver) as a finding
            ok, detail = False, f"{type(error).__name__}: {error}".splitlines()[0][:300]
        findings.append(Finding(role, engine, device, model, ok, time.perf_counter() - start, detail))
        log.info("%s: %s", role, "ok" if ok else "FAILED")
    return findings


def render(findings: list[Finding]) -> str:
    lines = [f"{'role':<16} {'engine':<13} {'device':<6} {'result':<6} {'seconds':>8}  detail"]
    for f in findings:
        lines.append(f"{f.role:<16} {f.engine:<13} {f.device:<6} {'ok' if f.ok else 'FAILED':<6} {f.seconds:>8.1f}  "
                     f"{f.model}: {f.detail}")
    return "\n".join(lines)
