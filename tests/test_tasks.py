"""reasoning-gym as a prompt source and verifier (persyn/sources/tasks.py): byte-stable per seed, the family's
own score_answer on the extracted answer, one error for a bad family, and no teacher that is a student."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import reasoning_gym

from persyn.core import io
from persyn.params import config
from persyn.pipeline import prompts
from persyn.sources import tasks
from persyn.sources.answers import verified
from persyn.params.config import tomllib
from persyn.core.errors import PersynError

ROOT = Path(__file__).resolve().parents[1]
TASKS = [{"family": "chain_sum", "config": {"min_terms": 2, "max_terms": 3, "max_digits": 2}},
         {"family": "spell_backward", "weight": 2.0, "config": {"max_word_len": 5}},
         {"family": "letter_counting", "config": {"min_words": 3, "max_words": 5}}]


def gym_raw(**prompt_keys: object) -> dict:
    """The default params with a reasoning-gym source and the verifier as quality."""
    raw = tomllib.loads((ROOT / "params.toml").read_text())
    raw["prompts"] = {"source": "reasoning_gym", "count": 60, "seed": 0, "router_size": 12, "eval_size": 12,
                      "tasks": TASKS, **prompt_keys}
    raw["quality"]["kind"] = "verifier"
    return raw


def built_bytes(tmp_path: Path, seed: int) -> bytes:
    records = prompts.build(config.parse(gym_raw(seed=seed)).prompts)
    path = tmp_path / f"prompts-{seed}.parquet"
    io.write_parquet(path, records, "prompt")
    return path.read_bytes()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first, again, other = built_bytes(tmp_path, 0), built_bytes(tmp_path, 0), built_bytes(tmp_path, 1)
    assert first == again
    assert first != other


def test_records_keep_family_and_verifier_and_weights_split_the_count() -> None:
    records = prompts.build(config.parse(gym_raw()).prompts)
    families = [r["family"] for r in records]
    assert {f: families.count(f) for f in set(families)} == {"chain_sum": 15, "spell_backward": 30, "letter_counting": 15}
    for record in records:
        entry = json.loads(record["verifier"])["entry"]
        assert record["messages"][0]["content"] == entry["question"] and record["reference"] == entry["answer"]


def test_a_family_added_leaves_the_others_prompts_alone() -> None:
    first = [r["prompt"] for r in tasks.generate(TASKS[:1], 10, 0)]
    both = [r["prompt"] for r in tasks.generate([TASKS[0], TASKS[2]], 20, 0)]
    assert both[:10] == first


@pytest.mark.parametrize("family,config_", [
    ("chain_sum", {"max_terms": 3, "max_digits": 2}),
    ("spell_backward", {"max_word_len": 5}),
    ("letter_counting", {"min_words": 3, "max_words": 5}),
    ("word_sorting", {"min_words": 3, "max_words": 4}),
])
def test_verifier_equals_reasoning_gyms_own_score(family: str, config_: dict) -> None:
    rows = tasks.generate([{"family": family, "config": config_}], 6, 3)
    dataset = reasoning_gym.create_dataset(family, size=1, seed=0, **config_)
    for row in rows:
        entry = json.loads(row["verifier"])["entry"]
        prompt = {"id": "x", "reference": row["reference"], "verifier": row["verifier"]}
        planted = {"right": entry["answer"], "wrong": entry["answer"] + "zz", "partial": entry["answer"][:1]}
        for answer in planted.values():
            expected = dataset.score_answer(answer=answer, entry=entry)
            for response in (f"Let me think.\nAnswer: {answer}", f"<answer>{answer}</answer>",
                             f"Some steps.\nThe answer is {answer}"):
                assert verified(response, prompt, "p") == expected, (family, response)
        assert verified(f"Answer: {entry['answer']}", prompt, "p") == 1.0


def test_an_answer_the_verifier_cannot_read_is_wrong_not_a_crash() -> None:
    (row,) = tasks.generate([{"family": "prime_factorization", "config": {"max_value": 50}}], 1, 0)
    dataset = reasoning_gym.create_dataset("prime_factorization", size=1, seed=0, max_value=50)
    with pytest.raises(ValueError):  # reasoning-gym's own verifier on this answer
        dataset.score_answer(answer="x", entry=json.loads(row["verifier"])["entry"])
    prompt = {"id": "x", "reference": row["reference"], "verifier": row["verifier"]}
    assert verified("Answer: x", prompt, "p") == 0.0
    assert verified(f"Answer: {row['reference']}", prompt, "p") == 1.0


@pytest.mark.parametrize("response,expected", [
    ("step one\nAnswer: 42", "42"), ("**Answer:** 42.", "42"), ("Final answer: 'olleh'", "olleh"),
    ("So the answer is Friday.", "Friday"), ("\\boxed{7}", "7"), ("eert", "eert"), ("", None),
    ("<answer>a, b</answer>\nAnswer: c", "a, b"),
    ("Answer: 15 - 93 = -78", "-78"), ("Answer: 29 * 91 = 2639.", "2639"),
])
def test_extract(response: str, expected: str | None) -> None:
    assert tasks.extract(response) == expected


@pytest.mark.parametrize("task,message", [
    ({"family": "chain_summ"}, "prompts.tasks: unknown reasoning-gym family 'chain_summ' (similar: chain_sum"),
    ({"family": "chain_sum", "config": {"nosuch": 1}}, "family 'chain_sum': bad config {\"nosuch\": 1}"),
    ({"family": "chain_sum", "config": {"min_terms": 5, "max_terms": 2}}, "max_terms must be >= min_terms"),
    ({"family": "base_conversion", "config": {"min_value": 0, "max_value": 1}}, "cannot be verified"),
])
def test_bad_family_or_config_is_one_error(task: dict, message: str) -> None:
    with pytest.raises(PersynError, match="params.toml: prompts.tasks") as caught:
        prompts.build(config.parse(gym_raw(tasks=[task])).prompts)
    assert message in str(caught.value)


def test_persyn_check_refuses_an_unknown_family_in_one_line(tmp_path: Path) -> None:
    text = (ROOT / "params.toml").read_text().replace(
        'source = "builtin:arithmetic"', 'source = "reasoning_gym"\ntasks = [{ family = "nosuch_family" }]')
    (tmp_path / "params.toml").write_text(text.replace('kind = "math"', 'kind = "verifier"'))
    done = subprocess.run([str(Path(sys.executable).parent / "persyn"), "check"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "unknown reasoning-gym family 'nosuch_family'" in done.stderr
    assert "Traceback" not in done.stderr


def test_verifier_needs_the_reasoning_gym_source() -> None:
    raw = gym_raw()
    raw["prompts"] = tomllib.loads((ROOT / "params.toml").read_text())["prompts"]
    with pytest.raises(PersynError, match="quality.kind = 'verifier' needs prompts.source = 'reasoning_gym'"):
        config.parse(raw)


def test_a_teacher_that_is_a_student_is_refused_unless_meant() -> None:
    raw = tomllib.loads((ROOT / "params.toml").read_text())
    raw["teachers"]["qwen"]["model"] = raw["students"]["smol"]["model"]
    with pytest.raises(PersynError, match="teachers.qwen.model is student 'smol''s own model"):
        config.parse(raw)
    raw["teachers"]["qwen"]["self_distillation"] = True
    assert config.parse(raw).teachers["qwen"].self_distillation


def test_the_default_has_no_teacher_equal_to_its_student() -> None:
    params = config.load(ROOT / "params.toml")
    students = {s.model for s in params.students.values()}
    assert all(t.model not in students and not t.self_distillation for t in params.teachers.values())


def test_allocate_sums_to_count() -> None:
    assert tasks.allocate(10, [1.0, 1.0, 1.0]) == [4, 3, 3]
    assert tasks.allocate(7, [2.0, 1.0]) == [5, 2]
    assert sum(tasks.allocate(101, [0.3, 1.7, 2.2])) == 101
