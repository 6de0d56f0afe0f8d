"""The CTranslate2 engine against the transformers engine on the same tiny models, converted here."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from persyn import engines
from persyn.core import models
from persyn.core.chat import prompt_ids
from persyn.engines import GenerationRequest, Sampling, ScoreRequest
from persyn.core.errors import PersynError
from persyn.core.models import cache_root
from persyn.pipeline.runner import engine_identity
from persyn.testing import tiny
from persyn.testing.dvcproject import params_toml

pytest.importorskip("ctranslate2")

ASKS = [[{"role": "user", "content": "Ava has 3 coins and buys 4 more. How many coins does Ava have?"}],
        [{"role": "user", "content": "Q"}],
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 12 + 30?"}]]
FLOAT32 = {"compute_type": "float32", "score_compute_type": "float32"}


@pytest.fixture(scope="module")
def pair(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The student on both engines; the conversion goes to a module-wide cache directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSYN_CACHE_DIR", str(tmp_path_factory.mktemp("ct2-cache")))
        model = models.resolve(f"local:{tiny_models['student']}")
        reference = engines.load("transformers", model, batch_size=3)
        fast = engines.load("ctranslate2", model, batch_size=3, options=FLOAT32)
        yield reference, fast
        fast.close()
        reference.close()


def test_float32_greedy_answers_equal_the_transformers_engine(pair) -> None:
    reference, fast = pair
    requests = [GenerationRequest(messages=m) for m in ASKS] + [GenerationRequest(text="Question: 1+1\nAnswer:")]
    for max_tokens in (1, 7, 20):
        assert fast.generate(requests, Sampling(max_tokens=max_tokens)) == reference.generate(
            requests, Sampling(max_tokens=max_tokens))


def test_loglikelihoods_equal_the_transformers_engine(pair) -> None:
    reference, fast = pair
    requests = [ScoreRequest(ASKS[0], "3 + 4 = 7. The answer is 7."), ScoreRequest(ASKS[1], "Ok"),
                ScoreRequest(ASKS[2], "12 + 30 = 42. The answer is 42.")]
    for mine, theirs in zip(fast.loglikelihood(requests), reference.loglikelihood(requests)):
        assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-4) and mine.tokens == theirs.tokens


def test_stop_strings_end_the_row_early(pair) -> None:
    reference, fast = pair
    free = reference.generate([GenerationRequest(messages=ASKS[0])], Sampling(max_tokens=24))[0]
    stop = free.text[len(free.text) // 2: len(free.text) // 2 + 2]
    assert len(stop.strip()) == 2, "the tiny model's answer is too short to cut"
    cut = fast.generate([GenerationRequest(messages=ASKS[0])], Sampling(max_tokens=24, stop=(stop,)))[0]
    assert cut.text == free.text[: free.text.find(stop)].strip() and cut.finish_reason == "stop"
    assert cut.completion_tokens < free.completion_tokens  # decoding stopped, not just the text cut


def test_a_seeded_sample_does_not_depend_on_its_batch(pair) -> None:
    _, fast = pair
    sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=12)
    alone = fast.generate([GenerationRequest(messages=ASKS[0], seed=11)], sampling)[0]
    batch = fast.generate([GenerationRequest(messages=ASKS[1], seed=5), GenerationRequest(messages=ASKS[0], seed=11),
                           GenerationRequest(messages=ASKS[2], seed=7)], sampling)
    assert batch[1] == alone
    assert len({fast.generate([GenerationRequest(messages=ASKS[0], seed=s)], sampling)[0].text for s in range(4)}) > 1


def test_converted_once_per_compute_type_and_named_in_the_cache_key(tiny_models: dict[str, Path]) -> None:
    model = models.resolve(f"local:{tiny_models['teacher_a']}")
    engine = engines.load("ctranslate2", model, options={"compute_type": "int8"})
    engine.generate([GenerationRequest(messages=ASKS[1])], Sampling(max_tokens=2))
    converted = cache_root() / "models" / model.fingerprint / "ct2-int8" / "model.bin"
    stamp = converted.stat().st_mtime_ns
    engines.load("ctranslate2", model, options={"compute_type": "int8"}).generate(
        [GenerationRequest(messages=ASKS[1])], Sampling(max_tokens=2))
    assert converted.stat().st_mtime_ns == stamp  # loaded again, not converted again
    assert not list(converted.parent.parent.glob(".ct2-*"))  # no scratch left behind
    assert engine_identity("ctranslate2", {}) == {
        "engine": "ctranslate2", "engine_options": {"compute_type": "auto", "score_compute_type": "auto"}}
    assert engine_identity("ctranslate2", {"intra_threads": 2}) == engine_identity("ctranslate2", {})


def test_gemma3_generates_but_cannot_score(tmp_path: Path) -> None:
    model = models.resolve(f"local:{tiny.gemma3_lm(tmp_path / 'gemma')}")
    engine = engines.load("ctranslate2", model, options=FLOAT32)
    assert len(engine.generate([GenerationRequest(text="1+1=")], Sampling(max_tokens=4))) == 1
    with pytest.raises(PersynError, match=r"local:\S+gemma: engine 'ctranslate2' cannot score this model"):
        engine.loglikelihood([ScoreRequest(ASKS[1], "Ok")])


@pytest.mark.parametrize("options, message", [
    ({"compute_type": "int4"}, "compute_type must be auto or one of"),
    ({"score_compute_type": "fp8"}, "score_compute_type must be auto or one of"),
    ({"inter_threads": -1}, "inter_threads must be an integer >= 0"),
    ({"max_batch_size": -1}, "max_batch_size must be an integer >= 0"),
])
def test_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(PersynError, match=message):
        engines.parse_options("ctranslate2", options)


def test_hub_models_are_refused_with_advice() -> None:
    with pytest.raises(PersynError, match="engine 'ctranslate2' converts local weights"):
        engines.load("ctranslate2", models.resolve("hf:org/model@abc"))


def test_persyn_models_converts_what_each_role_needs(tiny_models: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from persyn.cli import main
    from persyn.testing.dvcproject import params_toml

    params = params_toml(tiny_models).replace("[generation]\n", "[generation]\nengine = \"ctranslate2\"\n").replace(
        "[students.student]\n", "[students.student]\nengine = \"ctranslate2\"\n")
    (tmp_path / "params.toml").write_text(params)
    main(["--params", str(tmp_path / "params.toml"), "models"])
    converted = {p.parent.name: sorted(c.name for c in p.parent.glob("ct2-*"))
                 for p in (cache_root() / "models").glob("*/ct2-*")}
    fingerprint = {role: models.resolve(f"local:{tiny_models[role]}").fingerprint for role in ("teacher_a", "student")}
    # tiny models are under 200M parameters: "auto" generates in float32 too, so one copy serves
    # the student's scoring and its evaluation; a teacher converts for generation only
    assert converted[fingerprint["teacher_a"]] == converted[fingerprint["student"]] == ["ct2-float32"]
    assert "ctranslate2: " in capsys.readouterr().out


def test_replicas_share_the_thread_budget() -> None:
    from persyn.engines.ctranslate2 import Options

    auto = Options()
    assert [auto.threads("cpu", budget) for budget in (1, 2, 8)] == [(1, 1), (2, 1), (2, 4)]
    assert auto.threads("cuda", 4) == (1, 4)
    assert Options(inter_threads=3).threads("cpu", 6) == (3, 2)
    assert Options(inter_threads=1, intra_threads=1).threads("cpu", 8) == (1, 1)
    assert [auto.parts("cpu"), auto.parts("cuda"), Options(inter_threads=3).parts("cpu")] == [2, 1, 3]


def test_int8_answers_do_not_depend_on_the_thread_budget(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 answer depends on the rows computed with it: a build with one thread (two builds at once)
    cuts its batches as one with two does, and one replica computes both halves in turn."""
    from persyn.core import claims

    _, fast = pair
    requests = [GenerationRequest(messages=m) for m in ASKS] + [GenerationRequest(text="Question: 1+1\nAnswer:")]
    answers, parts = {}, {}
    for budget in (2, 1):
        monkeypatch.setattr(claims, "threads", lambda: budget)
        engine = engines.load("ctranslate2", fast.model, batch_size=4, options={"compute_type": "int8"})
        recording = Recording(engine._generator("generate"))
        engine._generators["int8"] = recording
        answers[budget], parts[budget] = engine.generate(requests, Sampling(max_tokens=16)), recording.parts
        assert recording.num_generators == budget
        engine.close()
    assert answers[1] == answers[2] and parts[1] == parts[2] == [2]


class Recording:
    """A CTranslate2 generator that notes the part size of every batch it is asked to generate."""

    def __init__(self, generator) -> None:
        self.generator, self.parts = generator, []

    def __getattr__(self, name: str):
        return getattr(self.generator, name)

    def generate_batch(self, *args, **kwargs):
        self.parts.append(kwargs["max_batch_size"])
        return self.generator.generate_batch(*args, **kwargs)


def test_two_replicas_answer_a_batch_as_one_does(pair) -> None:
    """inter_threads 2: CTranslate2 computes a batch's two halves at once; every row keeps its place, its
    float32 answer, its stop string and its log-likelihood."""
    _, fast = pair
    one = engines.load("ctranslate2", fast.model, batch_size=4, options={**FLOAT32, "inter_threads": 1})
    two = engines.load("ctranslate2", fast.model, batch_size=4, options={**FLOAT32, "inter_threads": 2})
    requests = [GenerationRequest(messages=m) for m in ASKS] + [GenerationRequest(text="Question: 1+1\nAnswer:")]
    free = one.generate(requests, Sampling(max_tokens=24))
    assert two._generator("generate").num_generators == 2
    last = free[-1].text  # a stop string for a row of the second half
    stop = last[len(last) // 2: len(last) // 2 + 2]
    assert len(stop.strip()) == 2, "the tiny model's answer is too short to cut"
    for sampling in (Sampling(max_tokens=24), Sampling(max_tokens=24, stop=(stop,))):
        assert two.generate(requests, sampling) == one.generate(requests, sampling)
    assert two.generate(requests, Sampling(max_tokens=24, stop=(stop,)))[-1].finish_reason == "stop"
    pairs = [ScoreRequest(m, c.text or "Ok") for m, c in zip(ASKS, free)]
    for mine, theirs in zip(two.loglikelihood(pairs), one.loglikelihood(pairs)):
        assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-5) and mine.tokens == theirs.tokens
    one.close()
    two.close()


def test_auto_compute_types_follow_device_use_and_size(tiny_models: dict[str, Path]) -> None:
    from persyn.engines.ctranslate2 import Options, parameters

    auto = Options()
    assert [auto.resolved("cpu", use, 500_000_000) for use in ("generate", "score")] == ["int8", "float32"]
    assert auto.resolved("cpu", "generate", 135_000_000) == "float32"  # int8 changes most small-model answers
    assert [auto.resolved("cuda", use, 135_000_000) for use in ("generate", "score")] == ["int8_float16", "bfloat16"]
    assert Options(compute_type="int16").resolved("cpu", "generate", 1) == "int16"
    from transformers import AutoModelForCausalLM

    network = AutoModelForCausalLM.from_pretrained(tiny_models["student"])
    assert parameters(models.resolve(f"local:{tiny_models['student']}")) == network.num_parameters()


def test_the_train_stage_converts_the_checkpoint_the_evaluate_stage_loads(tiny_models: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    """train.prepare_answering converts a trained checkpoint for a CTranslate2 student (where the train stage
    has torch loaded already), so the evaluate stage finds it converted; a transformers student needs nothing."""
    pytest.importorskip("torch")
    from persyn.params import config
    from persyn.pipeline import train

    (tmp_path / "params.toml").write_text(params_toml(tiny_models))
    student = config.load(tmp_path / "params.toml").for_student("student").student
    checkpoint = tmp_path / "trained"
    shutil.copytree(tiny_models["student"], checkpoint)
    model = models.resolve(f"local:{checkpoint}", student.chat_template)
    where = cache_root() / "models" / model.fingerprint
    train.prepare_answering(checkpoint, dataclasses.replace(student, engine="transformers", engine_options={}))
    assert not where.exists()
    train.prepare_answering(checkpoint, dataclasses.replace(student, engine="ctranslate2", engine_options={}))
    assert (where / "ct2-float32" / "model.bin").is_file()  # the float32 a student under 200M generates in
    stamp = (where / "ct2-float32" / "model.bin").stat().st_mtime_ns
    engine = engines.load("ctranslate2", model, batch_size=2)
    engine.generate([GenerationRequest(messages=ASKS[1])], Sampling(max_tokens=2))
    assert (where / "ct2-float32" / "model.bin").stat().st_mtime_ns == stamp  # loaded, not converted again


def test_a_shared_prompt_prefix_is_computed_once_with_the_same_answers(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts sharing a system prompt: the shared tokens go to CTranslate2 as its static prompt (computed
    once per batch), and the answers equal those computed without it and the transformers engine's."""
    from persyn.engines import ctranslate2

    reference, fast = pair
    system = {"role": "system", "content": "You solve word problems. Write one short line, then 'The answer is N.'"}
    requests = [GenerationRequest(messages=[system, {"role": "user", "content": c}])
                for c in ("Ava has 3 coins and buys 4 more.", "Q", "What is 12 + 30?")]
    ids = [prompt_ids(fast.tokenizer, r.messages, None, fast.model.spec) for r in requests]
    assert ctranslate2.shared_prefix(ids) >= ctranslate2.STATIC_PROMPT
    assert ctranslate2.shared_prefix(ids[:1]) == 0 and ctranslate2.shared_prefix([ids[0], ids[0]]) == len(ids[0]) - 1
    shared = fast.generate(requests, Sampling(max_tokens=12))
    monkeypatch.setattr(ctranslate2, "STATIC_PROMPT", 10**9)
    assert fast.generate(requests, Sampling(max_tokens=12)) == shared == reference.generate(requests, Sampling(max_tokens=12))
