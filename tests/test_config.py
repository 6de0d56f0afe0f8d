import copy
from pathlib import Path

import pytest

from persyn import config
from persyn.config import tomllib
from persyn.errors import PersynError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def raw() -> dict:
    return tomllib.loads((ROOT / "params.toml").read_text())


def error_for(raw: dict) -> str:
    with pytest.raises(PersynError) as caught:
        config.parse(raw)
    return str(caught.value)


def test_committed_params_are_valid() -> None:
    params = config.load(ROOT / "params.toml")
    assert params.router.alpha == 0.4
    assert set(params.teachers) == {"qwen", "smol", "gemma"}
    assert params.teachers["gemma"].prompt_template and params.teachers["gemma"].sampling.stop
    assert params.teachers["qwen"].sampling.max_tokens == 96  # inherited from [generation]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["router"].update(alpah=0.3), "params.toml: router.alpah: unknown key"),
        (lambda r: r.update(extra={}), "params.toml: extra: unknown key"),
        (lambda r: r["router"].update(alpha=1.5), "router.alpha: 1.5 is greater than the maximum of 1"),
        (lambda r: r["router"].update(alpha=-0.1), "router.alpha: -0.1 is less than the minimum of 0"),
        (lambda r: r["router"].update(alpha="high"), "router.alpha: 'high' is not of type 'number'"),
        (lambda r: r["teachers"].update({"Big Teacher": {"model": "local:x"}}), "name must match ^[a-z0-9_-]+$"),
        (lambda r: r["teachers"]["qwen"].update(max_tokens="many"), "teachers.qwen.max_tokens: 'many' is not of type"),
        (lambda r: r["teachers"]["qwen"].update(model="hf:org/model"), "teachers.qwen.model: 'hf:org/model': expected"),
        (lambda r: r["teachers"]["qwen"].update(prompt_template="Q: {prompt}"), "teachers.qwen: give either"),
        (lambda r: r["teachers"]["qwen"].pop("model"), "teachers.qwen.model: missing"),
        (lambda r: r.pop("router"), "params.toml: router: missing"),
        (lambda r: r["prompts"].update(source="jsonl"), "prompts.path is required"),
        (lambda r: r["quality"].update(kind="reward_model"), "quality.reward_model: missing"),
        (lambda r: r["route"].update(strategy="best"), "route.strategy: 'best': expected persyn | strongest"),
        (lambda r: r["train"].update(epochs=0), "train.epochs: 0 is less than or equal to the minimum of 0"),
        (lambda r: r["eval"].update(batch="x"), "eval.batch: unknown key"),
    ],
)
def test_bad_params_give_one_clear_error(raw: dict, mutate, expected: str) -> None:
    mutated = copy.deepcopy(raw)
    mutate(mutated)
    assert expected in error_for(mutated)


def test_unknown_teacher_is_named(raw: dict) -> None:
    params = config.parse(raw)
    with pytest.raises(PersynError, match="unknown teacher 'llama' \\(configured: gemma, qwen, smol\\)"):
        params.teacher("llama")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "params.toml").write_text("[router\nalpha = 1")
    with pytest.raises(PersynError, match="not valid TOML"):
        config.load(tmp_path / "params.toml")
    with pytest.raises(PersynError, match="file not found"):
        config.load(tmp_path / "missing.toml")


def test_an_old_student_table_says_how_to_migrate(raw: dict) -> None:
    raw["student"] = raw.pop("students")["smol"]
    message = error_for(raw)
    assert message.startswith("params.toml: [student] is now [students.<name>]")
    assert "rename [student] to [students.student]" in message


def test_each_student_overrides_train_and_eval_key_by_key(raw: dict) -> None:
    raw["students"]["gemma"] = {"model": "packaged:gemma-3-270m", "chat_template": "{{ messages }}",
                                "train": {"lr": 1e-4}, "eval": {"max_tokens": 32}}
    params = config.parse(raw)
    assert sorted(params.students) == ["gemma", "smol"]
    gemma = params.for_student("gemma")
    assert gemma.train.lr == 1e-4 and gemma.train.epochs == params.train.epochs == 1
    assert gemma.eval.max_tokens == 32 and gemma.eval.batch_size == params.eval.batch_size
    assert params.for_student("smol").train == params.train and params.for_student("smol").eval == params.eval
    assert gemma.student.chat_template == "{{ messages }}" and gemma.student.name == "gemma"
    with pytest.raises(PersynError, match="2 students .*Params.for_student"):
        params.student
    with pytest.raises(PersynError, match="unknown student 'qwen' .configured: gemma, smol."):
        params.for_student("qwen")


@pytest.mark.parametrize(
    ("students", "expected"),
    [
        ({"Big": {"model": "local:x"}}, "students.Big: name must match ^[a-z0-9_-]+$"),
        ({"s": {"model": "local:x", "train": {"lr": 0}}}, "students.s.train.lr: 0 is less than or equal to the minimum"),
        ({"s": {"model": "local:x", "epochs": 2}}, "students.s.epochs: unknown key"),
        ({}, "students: {} should be non-empty"),
    ],
)
def test_bad_student_tables_give_one_clear_error(raw: dict, students: dict, expected: str) -> None:
    raw["students"] = students
    assert expected in error_for(raw)


def test_student_and_teacher_names_that_join_to_one_stage_name_are_refused(raw: dict) -> None:
    raw["teachers"]["b-smol"] = {"model": "local:x"}  # student smol + teacher b-smol, student smol-b + teacher smol
    raw["students"]["smol-b"] = {"model": "local:y"}
    assert "both name the stages score@smol-b-smol" in error_for(raw)
