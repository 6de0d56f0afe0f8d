from pathlib import Path

import pytest
from dataclasses import asdict

from persyn.params import config
from persyn.pipeline import evaluate, runner
from persyn.pipeline.cache import RequestCache
from persyn.engines import Completion
from persyn.params.config import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [{"id": f"{i:016x}", "messages": [{"role": "user", "content": f"What is {i} + 1?"}],
            "reference": str(i + 1), "split": "eval"} for i in range(4)]


def params_for(tiny_models: dict[str, Path], **quality) -> config.Params:
    raw = tomllib.loads((ROOT / "params.toml").read_text())
    raw["students"]["smol"]["model"] = f"local:{tiny_models['student']}"
    raw["eval"].update(max_tokens=6, batch_size=2)
    raw["quality"].update(quality)
    return config.parse(raw)


def test_planted_answers_give_the_exact_accuracy(tiny_models: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    params = params_for(tiny_models)
    with RequestCache(tmp_path / "c.sqlite") as cache:
        first = evaluate.answers(params.student.model, params, PROMPTS, cache)
        planted = ["The answer is 1.", "2", "so 2 + 1 = 3. The answer is 3.", "The answer is 5."]
        cache.put_many("generate", "planted", {r["request"]: asdict(Completion(text, "stop", 5, 3))
                                               for r, text in zip(first, planted)})
        monkeypatch.setattr(runner.engines, "load",
                            lambda *a, **k: pytest.fail("every answer is cached: no model may load"))
        again = evaluate.answers(params.student.model, params, PROMPTS, cache)
        assert [r["response"] for r in again] == planted
        assert evaluate.score(params, PROMPTS, again, cache, "prompts") == ([1.0, 1.0, 1.0, 0.0], [[], [], [], []])


def test_reward_model_evaluation(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    params = params_for(tiny_models, kind="reward_model", reward_model=f"local:{tiny_models['reward']}")
    answers = [{"response": f"answer {i}"} for i in range(4)]
    with RequestCache(tmp_path / "c.sqlite") as cache:
        per_prompt, keys = evaluate.score(params, PROMPTS, answers, cache, "prompts")
        from persyn.pipeline.rewards import reward_model_quality

        values = reward_model_quality(params.quality, [(p["messages"], a["response"]) for p, a in zip(PROMPTS, answers)],
                                      cache).values
    assert evaluate.summarise("reward_model", per_prompt)["mean_reward"] == pytest.approx(sum(values) / 4)
    assert per_prompt == pytest.approx(values)
    assert [len(k) for k in keys] == [1, 1, 1, 1] and len({k[0] for k in keys}) == 4  # gc keeps what evaluate read


def test_lm_eval_is_skipped_cleanly_where_missing() -> None:
    assert evaluate.lm_eval("/nowhere", (), 0) == {}
    assert evaluate.lm_eval("/nowhere", ("gsm8k",), 10) == {"skipped": "lm_eval is not installed"}


def test_per_split_metrics_by_hand() -> None:
    """Six eval prompts (trained right on 3, untrained on 1) and four shifted ones (1 and 0) in mixed
    order: each split's accuracy and Wilson interval, computed here from the closed form."""
    splits = ["eval", "eval_shifted", "eval", "eval", "eval_shifted", "eval", "eval", "eval_shifted", "eval",
              "eval_shifted"]
    trained = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    untrained = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    z = 1.959963984540054

    def wilson(k: int, n: int) -> dict:
        p, shrink = k / n, 1 + z * z / n
        centre, half = (p + z * z / (2 * n)) / shrink, z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / shrink
        return {"accuracy": p, "ci95": {"low": pytest.approx(max(0.0, centre - half)), "high": pytest.approx(centre + half)},
                "prompts": n}

    found = evaluate.metrics("math", splits, trained, untrained)
    assert found == {"trained": wilson(3, 6), "untrained": wilson(1, 6),
                     "eval_shifted": {"trained": wilson(1, 4), "untrained": wilson(0, 4)}}
    assert found["eval_shifted"]["untrained"]["ci95"]["low"] == 0.0  # 0 of 4: the interval starts at 0 exactly
    assert "eval_shifted" not in evaluate.metrics("math", ["eval"] * 2, [1.0, 0.0], [0.0, 0.0])
    assert evaluate.metrics("math", ["eval_shifted"], [1.0], [1.0])["trained"] == {"accuracy": None, "ci95": None,
                                                                                  "prompts": 0}
    rewards = evaluate.metrics("reward_model", ["eval"] * 3, [0.5] * 3, [-1.0] * 3)
    assert rewards["trained"] == {"mean_reward": 0.5, "ci95": {"low": 0.5, "high": 0.5}, "prompts": 3}
