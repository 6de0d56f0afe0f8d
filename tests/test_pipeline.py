"""The real pipeline under real `dvc repro`, on tiny models built here, in a temporary git repo.

One build per module (`built`), read only; every test that changes anything works on its own copy
(`project`), so each test passes alone and in any order."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml

from persyn.testing.dvcproject import Project, make_project, params_toml

pytestmark = pytest.mark.slow

STAGES_A = {"sample@a", "score@student-a", "generate@student-a"}
ALL_STAGES = {"models", "prompts", "embed", "sample@a", "sample@base", "score@student-a", "score@student-base",
              "fit_router@student", "route@student", "generate@student-a", "generate@student-base", "sharing",
              "fallback@student", "assemble@student", "train@student", "evaluate@student"}
INSIDE = {"encoder": Path("models/encoder"), "teacher_a": Path("models/teacher_a"), "base": Path("models/base"),
          "student": Path("models/student")}  # local:models/<name>: each copy of the project has its own weights


@pytest.fixture(scope="module")
def built(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, set[str]]:
    """One full build and the stages it ran; read it, never change it (copy it: `project`)."""
    project = make_project(tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("cache"), params_toml(INSIDE),
                           {name: tiny_models[name] for name in INSIDE})
    return project, project.repro()


@pytest.fixture()
def project(built: tuple[Project, set[str]], tmp_path: Path) -> Project:
    return built[0].copy(tmp_path)


def test_first_repro_builds_a_loadable_dataset(built: tuple[Project, set[str]]) -> None:
    project, ran = built
    assert ran == ALL_STAGES
    metrics = json.loads(project.file_bytes("metrics/student/dataset.json"))
    router = json.loads(project.file_bytes("metrics/student/router.json"))
    loaded = datasets.load_dataset(str(project.path / "data/dataset/student"), split="train")
    assert len(loaded) == metrics["records"] == 28 - 4  # every prompt but the eval split
    assert set(loaded["teacher"]) <= {"a", "base"} and loaded[0]["messages"][-1]["role"] == "assistant"
    assert len(list((project.path / "data/dataset/student").glob("train-*.parquet"))) == 4  # 24 records, shards of 7
    assert metrics["generations"]["generate_then_select"] == 2 * 24
    assert metrics["generations"]["used"] == 2 * 10 + 14
    assert sum(t["records"] for t in metrics["teachers"].values()) == 24
    assert router["train_prompts"] + router["prompts"] == 10 and router["alpha"] == 0.4
    assert router["routing_fit"] == {"on": "all", "prompts": 10, "pairs": router["routing_fit"]["pairs"]}
    saved = json.loads(project.file_bytes("data/router/student/router.json"))
    assert saved["fit_on"] == "all" and len(saved["held_out_ids"]) == router["prompts"] == 3
    prompts = pl.read_parquet(project.path / "data/prompts.parquet")
    assert set(saved["held_out_ids"]) <= set(prompts.filter(pl.col("split") == "router")["id"].to_list())
    predictions = pl.read_parquet(project.path / "data/eval/student/predictions.parquet")
    assert sorted(predictions["split"].to_list()) == ["eval"] * 4 + ["eval_shifted"] * 3
    evaluated = prompts.filter(pl.col("split").is_in(["eval", "eval_shifted"]))
    assert sorted(predictions["id"].to_list()) == sorted(evaluated["id"].to_list())
    evaluation = json.loads(project.file_bytes("metrics/student/eval.json"))
    assert evaluation["trained"]["prompts"] == 4 and evaluation["eval_shifted"]["trained"]["prompts"] == 3
    shifted = predictions.filter(pl.col("split") == "eval_shifted")["trained_score"].to_list()
    assert evaluation["eval_shifted"]["trained"]["accuracy"] == sum(shifted) / 3
    assert all(m.startswith("local:") and "@sha256:" in m for m in loaded["model"])
    identity = json.loads(project.file_bytes("data/models/teachers/a.json"))
    sampled = set(pl.read_parquet(project.path / "data/sample/a.parquet")["model"].to_list())
    assert identity["role"] == "teacher a" and sampled == {identity["identity"]}  # what every answer of a names
    assert json.loads(project.file_bytes("data/models/quality.json"))["identity"] is None  # math: no reward model


def test_after_a_build_status_is_up_to_date_and_a_second_repro_runs_nothing(project: Project) -> None:
    assert "Data and pipelines are up to date." in project.run("dvc", "status").stdout
    assert project.repro() == set()


def test_a_new_prompt_file_invalidates_the_prompts_stage(project: Project) -> None:
    added = project.path / "data/source/more.jsonl"
    added.write_text('{"prompt": "What is 1 + 1?", "reference": "2"}\n')
    assert "prompts:" in project.run("dvc", "status").stdout
    added.unlink()
    assert json.loads(project.run("dvc", "status", "--json").stdout) == {}


def test_same_params_same_bytes(project: Project) -> None:
    """A forced rebuild (answers now come from the request cache) reproduces every artifact exactly, so
    dvc.lock is the same whatever the cache held; only the run logs (runs/, not versioned) say that
    this run generated nothing."""
    before, metrics_before = project.lock_hashes(), project.file_bytes("metrics/student/dataset.json")
    cold = json.loads(project.file_bytes("runs/sample@a.json"))
    assert project.repro("--force") == ALL_STAGES
    assert project.lock_hashes() == before and project.file_bytes("metrics/student/dataset.json") == metrics_before
    warm = json.loads(project.file_bytes("runs/sample@a.json"))
    assert (cold["generated"], cold["usage"]["requests"], warm["generated"], warm["reused"]) == (10, 10, 0, 10)
    assert "runs" not in project.run("git", "status", "--porcelain").stdout  # git-ignored, never an output


def routed_pool(project: Project, teacher: str) -> set[str]:
    pool = {r["id"] for r in pl.read_parquet(project.path / "data/prompts.parquet").to_dicts() if r["split"] == "pool"}
    return set(pl.read_parquet(project.path / f"data/routes/student/{teacher}.parquet")["id"].to_list()) & pool


def route_bytes(project: Project) -> dict[str, bytes]:
    return {t: project.file_bytes(f"data/routes/student/{t}.parquet") for t in ("a", "base")}


def test_alpha_change_reruns_only_router_onward(project: Project) -> None:
    routes = route_bytes(project)
    before = {t: routed_pool(project, t) for t in ("a", "base")}
    project.set_param("alpha = 0.4", "alpha = 0.9")
    ran = project.repro()
    assert {"fit_router@student", "route@student"} <= ran
    assert not ran & {"prompts", "embed", "sample@a", "sample@base", "score@student-a", "score@student-base"}
    for teacher in ("a", "base"):
        changed = project.file_bytes(f"data/routes/student/{teacher}.parquet") != routes[teacher]
        assert (f"generate@student-{teacher}" in ran) == changed
        stats = json.loads(project.file_bytes(f"runs/generate@student-{teacher}.json"))
        moved_in = routed_pool(project, teacher) - before[teacher]
        if changed:  # exactly the prompts that moved to this teacher are generated; nothing else
            assert stats["generated"] == len(moved_in)
            assert stats["reused"] == len(routed_pool(project, teacher) & before[teacher])
    assert json.loads(project.file_bytes("metrics/student/router.json"))["alpha"] == 0.9


def test_one_teacher_change_reruns_only_its_branch(project: Project) -> None:
    project.set_param('stop = ["\\nQuestion:"]', 'stop = ["\\nQuestion:"]\nmax_tokens = 5')
    ran = project.repro()
    assert {"sample@base", "score@student-base"} <= ran
    assert not ran & (STAGES_A - {"generate@student-a"}) and not ran & {"prompts", "embed"}
    if "generate@student-a" in ran:
        assert "route@student" in ran  # only a changed route can re-run another teacher's generation


def replace_weights(project: Project, model: str, donor: Path) -> None:
    """New weights at the same path (params.toml unchanged): what a fine-tuned checkpoint saved in place does."""
    shutil.copy(donor / "model.safetensors", project.path / "models" / model / "model.safetensors")


def test_new_teacher_weights_at_the_same_path_rerun_exactly_its_branch(project: Project,
                                                                       tiny_models: dict[str, Path]) -> None:
    routes, outs = route_bytes(project), project.lock_hashes()
    replace_weights(project, "teacher_a", tiny_models["teacher_b"])
    ran = project.repro()
    after = project.lock_hashes()
    assert after["data/scores/student/a.parquet"] != outs["data/scores/student/a.parquet"]  # the new weights answered
    expected = {"models", "sample@a", "score@student-a", "fit_router@student", "route@student", "generate@student-a",
                "fallback@student", "assemble@student"}
    expected |= {"generate@student-base"} if route_bytes(project)["base"] != routes["base"] else set()
    expected |= {"sharing"} if route_bytes(project) != routes else set()
    expected |= {"train@student"} if after["data/dataset/student"] != outs["data/dataset/student"] else set()
    expected |= {"evaluate@student"} if after["data/student/student"] != outs["data/student/student"] else set()
    assert ran == expected
    assert project.repro() == set()


def test_new_student_weights_at_the_same_path_rerun_score_route_onward_and_train(project: Project,
                                                                                 tiny_models: dict[str, Path]) -> None:
    routes, order = route_bytes(project), project.file_bytes("data/route_order/student.parquet")
    replace_weights(project, "student", tiny_models["teacher_b"])
    ran = project.repro()
    changed = {f"generate@student-{t}" for t, old in routes.items()
               if project.file_bytes(f"data/routes/student/{t}.parquet") != old}
    changed |= {"sharing"} if changed else set()
    changed |= {"fallback@student"} if changed or project.file_bytes("data/route_order/student.parquet") != order else set()
    assert ran == {"models", "score@student-a", "score@student-base", "fit_router@student", "route@student",
                   "assemble@student", "train@student", "evaluate@student"} | changed


def test_dvc_experiment_changes_alpha_and_strategy(project: Project) -> None:
    output = project.run("dvc", "exp", "run", "-n", "alpha-half", "-S", "params.toml:router.alpha=0.5").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert {"fit_router@student", "route@student"} <= ran
    assert not ran & {"prompts", "embed", "sample@a", "sample@base", "score@student-a", "score@student-base"}
    output = project.run("dvc", "exp", "run", "-n", "strong", "-S", "params.toml:route.strategy=strongest").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert "route@student" in ran and "fit_router@student" not in ran
    metrics = json.loads(project.file_bytes("metrics/student/dataset.json"))
    assert sorted(t["share"] for t in metrics["teachers"].values()) == [0.0, 1.0]
    project.run("dvc", "exp", "run", "-n", "oracle", "-S", "params.toml:route.strategy=oracle")
    metrics = json.loads(project.file_bytes("metrics/student/dataset.json"))
    assert metrics["generations"]["used"] == metrics["generations"]["generate_then_select"] == 2 * 24
    for teacher in ("a", "base"):  # every router-subset answer is reused, none generated again
        generated = set(pl.read_parquet(project.path / f"data/generated/student/{teacher}.parquet")["request"].to_list())
        sampled = set(pl.read_parquet(project.path / f"data/sample/{teacher}.parquet")["request"].to_list())
        assert len(generated & sampled) == len(sampled) == 10
    shown = json.dumps(json.loads(project.run("dvc", "exp", "show", "--json").stdout))
    assert all(name in shown for name in ("alpha-half", "strong", "oracle"))
    diff = project.run("dvc", "metrics", "diff", "--json").stdout
    assert "metrics/student/dataset.json" in diff and "metrics/student/eval.json" in diff


def commit(project: Project, message: str) -> None:
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def test_release_refuses_dirty_then_publishes_once(project: Project) -> None:
    result = subprocess.run(["persyn", "release", "0.1.0"], cwd=project.path, env=project.env, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "release: the git tree is dirty" in result.stderr
    commit(project, "build")
    project.run("persyn", "release", "0.1.0")
    target = project.path / "releases/tiny-student/v0.1.0"
    metrics = {m: json.loads(project.file_bytes(f"metrics/student/{m}.json")) for m in ("dataset", "eval", "router")}
    loaded = datasets.load_dataset(str(target), split="train")
    assert len(loaded) == metrics["dataset"]["records"]
    header = yaml.safe_load((target / "README.md").read_text().split("---")[1])
    assert header["size_categories"] == ["n<1K"] and header["license"] == "other"
    assert header["persyn"]["records"] == metrics["dataset"]["records"]
    assert header["persyn"]["generations_used"] == metrics["dataset"]["generations"]["used"]
    assert header["persyn"]["eval_trained"] == metrics["eval"]["trained"]
    assert header["persyn"]["eval_shifted"] == metrics["eval"]["eval_shifted"]
    assert header["persyn"]["router_regret"] == metrics["router"]["router"]["regret"]
    provenance = json.loads((target / "provenance.json").read_text())
    assert provenance["tag"] == "tiny-student@v0.1.0" and provenance["params"]["route"]["strategy"] == "persyn"
    assert "tiny-student@v0.1.0" in project.run("git", "tag").stdout
    assert yaml.safe_load(project.file_bytes("dvc.yaml"))["artifacts"]["tiny-student"]["path"] == "releases/tiny-student/v0.1.0"
    assert project.run("git", "status", "--porcelain").stdout == ""
    again = subprocess.run(["persyn", "release", "0.1.0"], cwd=project.path, env=project.env, capture_output=True,
                           text=True)
    assert again.returncode == 2 and "tag tiny-student@v0.1.0 already exists" in again.stderr


def test_diff_between_a_release_and_an_experiment(project: Project) -> None:
    commit(project, "build")
    project.run("persyn", "release", "0.1.0")
    project.run("dvc", "exp", "run", "-n", "strong", "-S", "params.toml:route.strategy=strongest")
    output = project.run("persyn", "diff", "strong", "tiny-student@v0.1.0").stdout
    assert "| route.strategy | strongest | persyn |" in output
    assert "| added | 0 |" in output and "| removed | 0 |" in output


def test_bad_params_stop_before_any_work(project: Project) -> None:
    project.set_param("alpha = 0.4", "alpha = 1.9")
    result = subprocess.run(["dvc", "repro"], cwd=project.path, env=project.env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "persyn: error: params.toml: router.alpha: 1.9 is greater than the maximum of 1" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


def cache_entries(project: Project) -> set[tuple[str, float]]:
    with sqlite3.connect(project.cache / "requests" / "requests.sqlite") as connection:
        return set(connection.execute("SELECT key, created FROM requests"))


def test_cache_gc_keeps_everything_a_rebuild_reads(project: Project) -> None:
    """After gc, a forced rebuild of everything, the oracle's scoring and the evaluation included,
    computes nothing: gc removed only what no current output references."""
    project.set_param('strategy = "persyn"', 'strategy = "oracle"')
    project.repro()
    from persyn.pipeline.cache import RequestCache

    with RequestCache(project.cache / "requests" / "requests.sqlite") as cache:
        cache.put_many("generate", "gone@1", {"f" * 64: "an answer no output references"})
    project.run("persyn", "cache", "gc")  # the junk, and the answers of the student trained before the switch
    kept = cache_entries(project)
    assert "f" * 64 not in {key for key, _ in kept}
    assert project.repro("--force") == ALL_STAGES
    assert cache_entries(project) == kept  # nothing computed again: no entry added, none rewritten
