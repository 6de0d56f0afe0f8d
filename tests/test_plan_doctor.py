"""`persyn plan` counts what the build will generate; `persyn doctor` probes every configured engine."""

import json
import sys
from pathlib import Path

import pytest

from persyn import cli
from persyn.params import config
from persyn.project import doctor, plan
from persyn.core.errors import PersynError
from persyn.testing.dvcproject import params_toml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def params(tiny_models: dict[str, Path], **tables: dict) -> config.Params:
    raw = tomllib.loads(params_toml(tiny_models))
    for name, table in tables.items():
        section, _, key = name.partition("__")
        target = raw[section][key] if key else raw[section]
        target.update(table)
    return config.parse(raw)


def test_plan_counts_what_the_pipeline_generates(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    result = plan.plan(params(tiny_models), tmp_path / "absent.parquet")
    # the same numbers test_pipeline asserts on metrics/dataset.json after a real dvc repro
    assert result["prompts"] | {"source": None} == {"router": 10, "pool": 14, "eval": 4, "eval_shifted": 3, "source": None}
    assert result["generations"] == {"planned": 2 * 10 + 14, "planned_most": 2 * 10 + 14, "generate_then_select": 2 * 24,
                                     "saved_fraction": 1 - 34 / 48, "separate_builds": 34, "routed": None}
    assert result["teachers"]["a"]["fewest"] == 10 and result["teachers"]["a"]["most"] == 24
    assert result["teachers"]["a"]["max_completion_tokens"] == 24 * 8
    oracle = plan.plan(params(tiny_models, route={"strategy": "oracle"}), tmp_path / "absent.parquet")
    assert oracle["generations"]["planned"] == 48 and oracle["learnability_scores"] == 48


def test_plan_follows_the_strategy_and_counts_what_check_counts(tiny_models: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    """fixed:<teacher> sends the pool to that teacher only; check and plan print one prompt count (shifted included)."""
    fixed = plan.plan(params(tiny_models, route={"strategy": "fixed:base"}), tmp_path / "absent.parquet")
    assert {n: (t["fewest"], t["most"]) for n, t in fixed["teachers"].items()} == {"a": (10, 10), "base": (24, 24)}
    assert fixed["generations"]["planned"] == fixed["generations"]["planned_most"] == 2 * 10 + 14
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.toml").write_text(params_toml(tiny_models))
    cli.main(["check"])
    cli.main(["plan"])
    counted = "31 prompts: 10 router subset S, 14 pool P, 4 eval, 3 eval_shifted"
    assert capsys.readouterr().out.count(counted) == 2


def test_plan_counts_the_teachers_once_for_several_students(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Three students, two teachers: S is answered once; a pool prompt reaches at most two teachers."""
    raw = tomllib.loads(params_toml(tiny_models))
    raw["students"].update(other={"model": f"local:{tiny_models['teacher_a']}"}, third={"model": "local:x"})
    raw["teachers"]["a"]["self_distillation"] = True  # teacher a is student other's model
    result = plan.plan(config.parse(raw), tmp_path / "absent.parquet", root=tmp_path)
    assert result["students"] == ["other", "student", "third"]
    assert result["generations"] | {"saved_fraction": None} == {
        "planned": 2 * 10 + 14, "planned_most": 2 * 10 + 2 * 14, "generate_then_select": 48, "saved_fraction": None,
        "separate_builds": 3 * 34, "routed": None}
    assert result["learnability_scores"] == 3 * 2 * 10
    assert "3 students (other, student, third) share the teachers' answers: 34–48 generations against 102" \
        in plan.render(result)
    raw["route"]["strategy"] = "oracle"
    oracle = plan.plan(config.parse(raw), tmp_path / "absent.parquet", root=tmp_path)["generations"]
    assert (oracle["planned"], oracle["planned_most"], oracle["separate_builds"]) == (48, 48, 3 * 48)


def test_plan_prices_an_api_teacher(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    api = {"model": "api:big-model", "engine": "openai", "max_tokens": 100,
           "engine_options": {"base_url": "http://127.0.0.1:9/v1", "cost_per_million_prompt_tokens": 2.0,
                              "cost_per_million_completion_tokens": 10.0}}
    result = plan.plan(params(tiny_models, teachers__a=api), tmp_path / "absent.parquet")
    each = result["teachers"]["a"]["cost_per_generation_usd"]
    prompt_tokens = each * 1e6 - 100 * 10.0
    assert 5 < prompt_tokens / 2.0 < 100  # a short arithmetic question plus the system prompt, in tokens
    assert result["cost_usd_at_most"] == pytest.approx(each * 24)  # S plus, at most, every pool prompt
    assert "API cost: at most $" in plan.render(result)


def test_plan_command_writes_json(tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.toml").write_text(params_toml(tiny_models))
    cli.main(["plan", "--json", "plan.json"])
    assert "34 planned against 48 for Generate-then-Select (29% saved)" in capsys.readouterr().out
    assert json.loads((tmp_path / "plan.json").read_text())["generations"]["planned"] == 34


def test_doctor_probes_every_engine_and_reports_each_failure(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    scored = {"kind": "reward_model", "reward_model": f"local:{tiny_models['reward']}"}
    healthy = doctor.run(params(tiny_models, quality=scored))
    assert [(f.role, f.ok) for f in healthy] == [("teacher a", True), ("teacher base", True), ("student student", True),
                                                  ("reward model", True), ("embed", True)]
    assert "log-likelihood" in healthy[2].detail and healthy[3].detail.startswith("reward ")
    dead_endpoint = {"model": "api:gone", "engine": "openai",
                     "engine_options": {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "connect_timeout_s": 2}}
    (tmp_path / "empty").mkdir()  # a directory, but no model in it
    no_model = {"model": f"local:{tmp_path / 'empty'}"}
    broken = doctor.run(params(tiny_models, teachers__a=dead_endpoint, students__student=no_model))
    by_role = {f.role: f for f in broken}
    assert not by_role["teacher a"].ok and "127.0.0.1:9" in by_role["teacher a"].detail
    assert not by_role["student student"].ok
    assert by_role["teacher base"].ok and by_role["embed"].ok
    assert "FAILED" in doctor.render(broken)
    with pytest.raises(PersynError, match="students.student.engine = 'openai' cannot score log-likelihoods"):
        params(tiny_models, students__student={"engine": "openai", "engine_options": dead_endpoint["engine_options"]})


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).parents[1] / "examples").iterdir()
                                           if (p / "params.toml").is_file()))
def test_paper_scale_examples_validate_and_plan(example: str, tmp_path: Path) -> None:
    loaded = config.load(Path(__file__).parents[1] / "examples" / example / "params.toml")
    pinned = ("hf:", "packaged:")  # a hub revision, or weights packaged with a checked sha256 (cpu-science)
    assert all(t.model.startswith(pinned) for t in loaded.teachers.values()), "examples pin their models"
    result = plan.plan(loaded, tmp_path / "absent.parquet")
    n, s, pool = len(loaded.teachers), loaded.prompts.router_size, result["prompts"]["pool"]
    assert result["generations"]["planned"] == n * s + pool < result["generations"]["generate_then_select"]


def test_check_validates_engine_options_without_loading(tiny_models: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    params_file = tmp_path / "params.toml"
    params_file.write_text(params_toml(tiny_models) + '\n[teachers.a.engine_options]\ntensor_parallel_size = 2\n')
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--params", str(params_file), "check"])
    assert stopped.value.code == 2
    assert "engine 'transformers' has no option 'tensor_parallel_size'" in capsys.readouterr().err
