"""Request-cache keys are a contract with every cache already filled: a change that moves one makes
every build compute its answers again. The keys below were computed by main at 08bc340, before the
request runner was split from teacher generation and evaluation got its own entry point; each entry
point must find answers planted under them, and load no model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import pytest

from persyn import engines
from persyn.params import config
from persyn.pipeline import evaluate, rewards, synthesis
from persyn.pipeline.cache import RequestCache
from persyn.params.config import QualityConfig, SamplingConfig, StudentConfig, TeacherConfig, tomllib
from persyn.engines import Completion

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [{"id": f"{i:016x}", "messages": [{"role": "user", "content": f"What is {i} + 1?"}], "reference": str(i + 1),
            "split": "eval"} for i in range(2)]
PAIRS = [(p["messages"], f"The answer is {i + 1}.") for i, p in enumerate(PROMPTS)]
Entry = Callable[[str, RequestCache], list[str]]


def teacher_chat(spec: str, cache: RequestCache) -> list[str]:
    teacher = TeacherConfig(name="t", model=spec, sampling=SamplingConfig(max_tokens=8), system_prompt="Be brief.")
    return [r["request"] for r in synthesis.generate(teacher, PROMPTS, cache)[0]]


def teacher_template_sampled(spec: str, cache: RequestCache) -> list[str]:
    sampling = SamplingConfig(temperature=0.7, top_p=0.9, max_tokens=8, stop=("\n",), seed=3,
                              engine_options={"dtype": "float32"})
    teacher = TeacherConfig(name="t", model=spec, sampling=sampling, prompt_template="Q: {prompt}\nA:")
    return [r["request"] for r in synthesis.generate(teacher, PROMPTS, cache)[0]]


def evaluation(spec: str, cache: RequestCache) -> list[str]:
    raw = tomllib.loads((ROOT / "params.toml").read_text())
    raw["students"]["smol"].update(model=spec, engine="transformers", device="cpu", engine_options={})
    raw["eval"].update(max_tokens=8, batch_size=2)
    return [r["request"] for r in evaluate.answers(spec, config.parse(raw), PROMPTS, cache)]


def learnability(spec: str, cache: RequestCache) -> list[str]:
    return rewards.learnability(StudentConfig(model=spec, max_length=256), PAIRS, cache).keys


def reward_model(spec: str, cache: RequestCache) -> list[str]:
    quality = QualityConfig(kind="reward_model", reward_model=spec, max_length=256)
    return rewards.reward_model_quality(quality, PAIRS, cache).keys


GOLDEN: dict[str, tuple[str, Entry, list[str]]] = {
    "teacher chat": ("generate", teacher_chat, [
        "309a600997725829bcd7a2bfa753b9742b67f08a9ebad45626310e347d997487",
        "2dd880d52ee3e11c45538918c5fc0bb4ed802e8cb009aa7481ebf7cef0672693"]),
    "teacher template, sampled": ("generate", teacher_template_sampled, [
        "7eb90c7b372d7e98d22fe1d0223694957d0c7d95098a84bb27a085b41e402a76",
        "135c7758421084edc02f044d8b3dd754783a17e43b35808c53f47eabc437c076"]),
    "evaluation": ("generate", evaluation, [
        "aa49d767a33ed93d5000e3c595b6a5b18788a0c46bcdd1201478d80e1697de91",
        "9f2aa0f4869a2f84db1e4df3c938f904448c23a4b68ec908b22900c67a4d92e7"]),
    "learnability": ("loglikelihood", learnability, [
        "be6c7b196158a8d4a6b9e4adb7547dff1d3d29e1929b736943d893ca47284c1b",
        "ab85feabb88e9c64e5881efe8f33cb7edf5bbe7e3685f4972b115cff5b945fcd"]),
    "reward model": ("reward", reward_model, [
        "8c104031b20c293d33598cca84fcc0d16dd42a43b142f209e311f3280375b857",
        "fcc01859eaf45945b4fbb4e5a847ac9e562ebf60d1c5d21113462e48bb89da74"]),
}
PLANTED: dict[str, Any] = {"generate": asdict(Completion("The answer is 2.", "stop", 9, 5)), "loglikelihood": -0.5,
                           "reward": 0.25}


def model_directory(tmp_path: Path) -> str:
    """A local model whose identity (its base name and content hash) never changes; it is never loaded."""
    directory = tmp_path / "student"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "llama"}\n')
    return f"local:{directory}"


@pytest.mark.parametrize("scenario", sorted(GOLDEN))
def test_every_entry_point_keeps_its_request_keys(scenario: str, tmp_path: Path, monkeypatch) -> None:
    kind, entry, keys = GOLDEN[scenario]
    spec = model_directory(tmp_path)
    monkeypatch.setattr(engines, "load", lambda *a, **k: pytest.fail("every answer is cached: no model may load"))
    monkeypatch.setattr(engines, "load_reward", lambda *a, **k: pytest.fail("every score is cached: no model may load"))
    with RequestCache(tmp_path / "requests.sqlite") as cache:
        cache.put_many(kind, "planted", {key: PLANTED[kind] for key in keys})
        assert entry(spec, cache) == keys
