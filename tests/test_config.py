import copy
import dataclasses
import inspect
from pathlib import Path

import jsonschema
import pytest

from persyn.params import config
from persyn.params.config import tomllib
from persyn.core.errors import PersynError
from persyn.core.schemas import resolved

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
    assert set(params.teachers) == {"qwen", "qwen_steps", "gemma"}
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
    with pytest.raises(PersynError, match="unknown teacher 'llama' \\(configured: gemma, qwen, qwen_steps\\)"):
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
    raw["teachers"]["gemma"]["self_distillation"] = True  # the student gemma's own model
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
        ({}, "students: at least 1 needed, 0 given"),
    ],
)
def test_bad_student_tables_give_one_clear_error(raw: dict, students: dict, expected: str) -> None:
    raw["students"] = students
    assert expected in error_for(raw)


def test_student_and_teacher_names_that_join_to_one_stage_name_are_refused(raw: dict) -> None:
    raw["teachers"]["b-smol"] = {"model": "local:x"}  # student smol + teacher b-smol, student smol-b + teacher smol
    raw["teachers"]["smol"] = {"model": "local:z"}
    raw["students"]["smol-b"] = {"model": "local:y"}
    assert "both name the stages score@smol-b-smol" in error_for(raw)


def test_students_whose_release_names_would_collide_are_refused(raw: dict) -> None:
    raw["students"]["a_b"] = {"model": "local:x"}
    raw["students"]["a-b"] = {"model": "local:y"}  # a release name spells "_" as "-": both would be <name>-a-b
    assert "students 'a-b' and 'a_b' would be released under one name" in error_for(raw)


def schema_keys(node: dict, prefix: str = ""):
    """(dotted key, resolved schema) of every key the params schema declares, named tables as '*'."""
    node = resolved(node, config.SCHEMA)
    for name, child in node.get("properties", {}).items():
        yield f"{prefix}{name}", resolved(child, config.SCHEMA)
        yield from schema_keys(child, f"{prefix}{name}.")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_keys(node["additionalProperties"], f"{prefix}*.")


def test_every_key_has_a_description_and_a_valid_default() -> None:
    """docs/params.md and the dataclass defaults are read from these: a key without a description
    or with a default its own schema refuses fails here, not in a user's build."""
    keys = list(schema_keys(config.SCHEMA))
    assert len(keys) > 90
    for key, spec in keys:
        assert spec.get("description"), f"{key}: no description"
        if "default" in spec:
            errors = list(jsonschema.Draft202012Validator(spec).iter_errors(spec["default"]))
            assert not errors, f"{key}: default {spec['default']!r}: {errors[0].message}"


def minimal(raw: dict) -> dict:
    """Only the keys the schema requires (and the teachers' and students' models)."""
    tables = {name: {k: v for k, v in raw[name].items() if k in config.schema_node(name).get("required", ())}
              for name in raw if name not in ("teachers", "students")}
    return {**tables, **{kind: {name: {"model": t["model"]} for name, t in raw[kind].items()}
                         for kind in ("teachers", "students")}}


def test_absent_keys_take_the_schema_defaults(raw: dict) -> None:
    raw = minimal(raw)
    raw["prompts"]["count"] = 100  # the built-in generator needs more prompts than S and the eval set
    params = config.parse(raw)
    generation = config.schema_node("generation")["properties"]
    assert params.teachers["qwen"].sampling == config.SamplingConfig()
    assert params.teachers["qwen"].sampling.max_tokens == generation["max_tokens"]["default"] == 256
    assert params.teachers["qwen"].sampling.stop == () and params.teachers["qwen"].system_prompt is None
    assert params.route == config.RouteConfig() and params.route.budget is None
    assert params.train == config.TrainConfig() and params.eval == config.EvalConfig()
    assert params.students["smol"] == config.StudentConfig(model=raw["students"]["smol"]["model"], name="smol")
    assert params.students["smol"].train == params.train and params.students["smol"].chat_template is None
    assert params.assemble == config.AssembleConfig() and params.assemble.drop_truncated is True
    assert params.prompts.fields == {"prompt": "prompt", "reference": "reference"}
    assert params.router == config.RouterConfig(alpha=raw["router"]["alpha"])


def test_every_table_reaches_params() -> None:
    """A table the schema accepts but Params has no field for would be read by no stage."""
    assert set(config.SCHEMA["properties"]) == {f.name for f in dataclasses.fields(config.Params)} | {"generation"}


def test_every_teacher_key_is_used(raw: dict) -> None:
    table = {"model": "local:/m", "prompt_template": "Q: {prompt}", "max_share": 0.5, "max_prompts": 9,
             "engine": "openai", "device": "cuda", "temperature": 0.7, "top_p": 0.9, "max_tokens": 7,
             "stop": ["\n"], "batch_size": 3, "seed": 5, "engine_options": {"base_url": "http://x", "served_model": "m"},
             "self_distillation": True}
    assert set(table) | {"system_prompt"} == set(config.schema_node("teachers", "*")["properties"])
    assert config.parse(raw).teacher("qwen_steps").system_prompt == raw["teachers"]["qwen_steps"]["system_prompt"]
    raw["teachers"]["qwen"] = table
    teacher = config.parse(raw).teacher("qwen")
    assert (teacher.model, teacher.prompt_template, teacher.max_share, teacher.max_prompts) == ("local:/m", "Q: {prompt}", 0.5, 9)
    assert teacher.self_distillation
    assert teacher.sampling == config.SamplingConfig("openai", "cuda", 0.7, 0.9, 7, ("\n",), 3, 5,
                                                 {"base_url": "http://x", "served_model": "m"})


def test_engine_options_are_inherited_only_on_the_same_engine(raw: dict) -> None:
    raw["generation"]["engine_options"] = {"compute_type": "int8"}
    raw["teachers"]["qwen"]["engine_options"] = {"inter_threads": 2}
    raw["teachers"]["qwen_steps"]["engine"] = "transformers"
    teachers = config.parse(raw).teachers
    assert teachers["qwen"].sampling.engine_options == {"compute_type": "int8", "inter_threads": 2}
    assert teachers["qwen_steps"].sampling.engine_options == {}
    assert teachers["gemma"].sampling.engine_options == {"compute_type": "int8"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({f.name: f.type for f in dataclasses.fields(config.RouterConfig) if f.name != "seed"},
         "params schema: router.seed is a key with no field in Drifted"),
        ({**{f.name: f.type for f in dataclasses.fields(config.RouterConfig)}, "beta": float},
         "Drifted.beta is a field with no key router.beta"),
        ({**{f.name: f.type for f in dataclasses.fields(config.RouterConfig)}, "epochs": str},
         "Drifted.epochs: annotated <class 'str'>, but the schema's router.epochs is integer with a default"),
        ({**{f.name: f.type for f in dataclasses.fields(config.RouterConfig)}, "alpha": "float | None"},
         "Drifted.alpha: annotated float | None, but the schema's router.alpha is required number"),
    ],
)
def test_a_table_class_that_drifts_from_the_schema_fails_at_import(body: dict, expected: str) -> None:
    with pytest.raises(TypeError) as caught:
        config.table("router")(type("Drifted", (), {"__annotations__": body, "__module__": config.__name__}))
    assert expected in str(caught.value)


def test_every_rule_between_keys_runs_at_parse_and_says_why() -> None:
    """persyn/params/rules.py is the one place for them: each public rule over the params is in rules.RULES,
    which config.parse runs, and its docstring says why the rule exists."""
    from persyn.params import rules

    defined = {function for name, function in vars(rules).items()
               if inspect.isfunction(function) and function.__module__ == rules.__name__ and not name.startswith("_")
               and list(inspect.signature(function).parameters) == ["params"] and function is not rules.check}
    assert defined == set(rules.RULES) and len(rules.RULES) == len(set(rules.RULES))
    assert all(rule.__doc__ and len(rule.__doc__) > 30 for rule in rules.RULES)
