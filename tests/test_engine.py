import shutil
from pathlib import Path

import pytest
import torch

from persyn import engines
from persyn.core import models
from persyn.engines import Completion, GenerationRequest, Sampling, ScoreRequest, Usage
from persyn.engines import token_completion, truncate_at_stop
from persyn.core.errors import PersynError
from persyn.pipeline.runner import engine_identity

USER = [{"role": "user", "content": "Ava has 3 coins and buys 4 more. How many coins does Ava have?"}]


@pytest.fixture(scope="module")
def engine(tiny_models: dict[str, Path]):
    loaded = engines.load("transformers", models.resolve(f"local:{tiny_models['student']}"), batch_size=3)
    yield loaded
    loaded.close()
    loaded.close()  # idempotent, like every engine's close


def hand_loglikelihood(engine, messages: list[dict[str, str]], response: str) -> float:
    """Token by token, one unbatched forward per response token, positions found from the text."""
    tokenizer, network = engine.tokenizer, engine.network
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    assert full_text.startswith(prompt_text) and full_text.endswith("<|im_end|>\n")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full_text[len(prompt_text):-1], add_special_tokens=False)["input_ids"]  # drop "\n"
    total, context = 0.0, list(prompt_ids)
    with torch.no_grad():
        for token in response_ids:
            logits = network(input_ids=torch.tensor([context])).logits[0, -1]
            total += logits.log_softmax(-1)[token].item()
            context.append(token)
    return total / len(response_ids)


def test_loglikelihood_masks_the_prompt_exactly(engine) -> None:
    pairs = [(USER, "3 + 4 = 7. The answer is 7."), ([{"role": "user", "content": "hi"}], "Ok"),
             (USER, "The answer is 12, since Ava buys 4 more coins and then 5 more.")]
    batched = engine.loglikelihood([ScoreRequest(m, r) for m, r in pairs])
    for (messages, response), score in zip(pairs, batched):
        assert score.logprob == pytest.approx(hand_loglikelihood(engine, messages, response), abs=1e-4)
        alone = engine.loglikelihood([ScoreRequest(messages, response)])[0]
        assert score.logprob == pytest.approx(alone.logprob, abs=1e-5) and score.tokens == alone.tokens


def test_greedy_generation_is_deterministic_and_batch_independent(engine) -> None:
    requests = [GenerationRequest(messages=USER), GenerationRequest(messages=[{"role": "user", "content": "Q"}])]
    both = engine.generate(requests, Sampling(max_tokens=12))
    assert both == engine.generate(requests, Sampling(max_tokens=12))
    assert engine.generate(requests[:1], Sampling(max_tokens=12))[0] == both[0]


def test_sampling_is_seeded_per_request(engine) -> None:
    sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=12)
    alone = engine.generate([GenerationRequest(messages=USER, seed=11)], sampling)[0]
    with_others = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "Q"}], seed=5),
                                   GenerationRequest(messages=USER, seed=11)], sampling)[1]
    assert alone == with_others
    others = {engine.generate([GenerationRequest(messages=USER, seed=s)], sampling)[0].text for s in range(4)}
    assert len(others) > 1


def test_stop_strings_cut_the_output() -> None:
    assert truncate_at_stop("7 apples.\nQuestion: next", ["\nQuestion:", "\n\n"]) == "7 apples."
    assert truncate_at_stop("no stop here ", ["\n\n"]) == "no stop here"


def test_base_model_needs_a_completion_prompt(tiny_models: dict[str, Path]) -> None:
    base = engines.load("transformers", models.resolve(f"local:{tiny_models['base']}"), batch_size=2)
    assert len(base.generate([GenerationRequest(text="Question: 1+1\nAnswer:")], Sampling(max_tokens=4))) == 1
    with pytest.raises(PersynError, match="no chat template: give this teacher a prompt_template"):
        base.generate([GenerationRequest(messages=USER)], Sampling(max_tokens=4))


def test_template_that_breaks_the_prefix_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(tiny_models["student"], odd)
    (odd / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT >{% endif %}")
    engine = engines.load("transformers", models.resolve(f"local:{odd}"), batch_size=2)
    with pytest.raises(PersynError, match="not render the prompt as a prefix"):
        engine.loglikelihood([ScoreRequest(USER, "7")])


def test_unknown_engine_is_named(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(PersynError, match="unknown engine 'tgi'"):
        engines.load("tgi", models.resolve(f"local:{tiny_models['student']}"))


def test_engine_options_are_checked_and_only_answer_changing_ones_enter_the_key() -> None:
    with pytest.raises(PersynError, match="engine 'transformers' has no option 'tensor_parallel_size'"):
        engines.parse_options("transformers", {"tensor_parallel_size": 2})
    with pytest.raises(PersynError, match="engine 'transformers' options: dtype must be auto or one of"):
        engines.parse_options("transformers", {"dtype": "int3"})
    with pytest.raises(PersynError, match="engine 'vllm' options: gpu_memory_utilization must be in"):
        engines.parse_options("vllm", {"gpu_memory_utilization": 1.5})
    assert engine_identity("transformers", {}) == {"engine": "transformers"}
    assert engine_identity("vllm", {"tensor_parallel_size": 8}) == {"engine": "vllm"}
    assert engine_identity("transformers", {"dtype": "bfloat16"}) == {"engine": "transformers",
                                                                     "engine_options": {"dtype": "bfloat16"}}


def test_vllm_on_a_cpu_is_one_clear_error(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(PersynError, match="engine 'vllm' runs on GPUs; set device = 'cuda'"):
        engines.load("vllm", models.resolve(f"local:{tiny_models['student']}"), "cpu")
    with pytest.raises(PersynError, match="an api: model is served by an endpoint; use engine = 'openai'"):
        engines.load("transformers", models.resolve("api:gpt-x"))
    with pytest.raises(PersynError, match="quality.engine = 'openai' cannot run a reward model"):
        engines.load_reward("openai", models.resolve("api:gpt-x"), "cpu", 64, {"base_url": "http://127.0.0.1:9/v1"})


def test_completions_count_real_tokens_and_say_why_they_ended(engine) -> None:
    requests = [GenerationRequest(messages=USER), GenerationRequest(messages=[{"role": "user", "content": "Q"}])]
    completions = engine.generate(requests, Sampling(max_tokens=5))
    usage = Usage.of(completions)
    prompts = [len(engine._prompt_ids(r)) for r in requests]
    assert usage.requests == 2 and [c.prompt_tokens for c in completions] == prompts
    for completion in completions:
        assert 1 <= completion.completion_tokens <= 5
        # a random tiny model rarely emits its end token: "length" exactly when it ran to max_tokens
        assert (completion.finish_reason == "length") == (completion.completion_tokens == 5)


def test_finish_reason_from_tokens() -> None:
    sampling = Sampling(max_tokens=4, stop=("\nQuestion:",))
    assert token_completion("a b c d", [5, 6, 7, 8], [2], sampling, 9) == Completion("a b c d", "length", 9, 4)
    assert token_completion("a b", [5, 6, 2], [2], sampling, 9).finish_reason == "stop"  # end token
    cut = token_completion("7.\nQuestion: x", [5, 6, 7, 8], [2], sampling, 9)  # stop string at max_tokens
    assert cut == Completion("7.", "stop", 9, 4)
    with pytest.raises(ValueError, match="finish_reason must be one of"):
        Completion("x", "eos", 1, 1)


def test_reward_model_reads_the_template_ids_with_one_bos(tmp_path: Path) -> None:
    """A Llama-3-style tokenizer (the template writes BOS, plain tokenising adds one): the reward
    model scores chat.reward_ids, the rendering the vLLM engine scores too, with a single BOS."""
    from persyn.core.chat import reward_ids
    from persyn.testing import tiny

    scorer = engines.load_reward("transformers", models.resolve(f"local:{tiny.reward_model(tmp_path / 'rm', bos=True)}"),
                                 "cpu", 512)
    bos = scorer.tokenizer.bos_token_id
    assert scorer.tokenizer("7")["input_ids"][0] == bos  # the fixture does add a BOS of its own
    pairs = [(USER, "3 + 4 = 7. The answer is 7."), ([{"role": "user", "content": "hi"}], "Ok")]
    rendered = [reward_ids(scorer.tokenizer, messages, response, 512) for messages, response in pairs]
    assert all(ids[0] == bos and ids.count(bos) == 1 for ids in rendered)
    with torch.no_grad():
        alone = [scorer.network(input_ids=torch.tensor([ids])).logits[0, 0].item() for ids in rendered]
    assert scorer.score(pairs) == pytest.approx(alone, abs=1e-5)
    assert reward_ids(scorer.tokenizer, *pairs[0], 5) == rendered[0][:5]
    scorer.close()
    scorer.close()  # idempotent, like every engine's close
