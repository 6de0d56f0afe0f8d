"""Two students in one real `dvc repro` on tiny models: the teachers answer once, every student gets
its own branch, and the stage lists DVC runs after each change are exactly the ones that change touches."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml

from persyn.testing.dvcproject import Project, make_project, params_toml
from persyn.testing.tiny import CHATML

pytestmark = pytest.mark.slow

STUDENTS = ("plain", "small")
TEACHERS = ("a", "base")
INSIDE = {"encoder": Path("models/encoder"), "teacher_a": Path("models/teacher_a"), "teacher_b": Path("models/teacher_b"),
          "base": Path("models/base"), "student": Path("models/student")}
SHARED = {"models", "prompts", "embed", "sample@a", "sample@base", "sharing"}
ADD_C = '[teachers.c]\nmodel = "local:models/teacher_b"\nsystem_prompt = "Answer in one line."\n\n[students.plain]'


def branch(student: str, teachers: tuple[str, ...] = TEACHERS) -> set[str]:
    """Every stage of one student's branch."""
    return ({f"score@{student}-{t}" for t in teachers} | {f"generate@{student}-{t}" for t in teachers}
            | {f"{stage}@{student}" for stage in ("fit_router", "route", "fallback", "assemble", "train", "evaluate")})


def two_students() -> str:
    """test_pipeline's build with a second student: the base model, given a chat template and its own lr."""
    plain = (f'[students.plain]\nmodel = "local:{INSIDE["base"]}"\nchat_template = """{CHATML}"""\nbatch_size = 4\n'
             'max_length = 256\ntrain = { lr = 0.002 }\n\n[students.small]')
    return (params_toml(INSIDE).replace("[students.student]", plain)
            .replace('[teachers.base]\n', '[teachers.base]\nself_distillation = true  # the student plain\'s weights\n', 1))


@pytest.fixture(scope="module")
def built(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, set[str]]:
    project = make_project(tmp_path_factory.mktemp("students"), tmp_path_factory.mktemp("students-cache"),
                           two_students(), {name: tiny_models[name] for name in INSIDE})
    return project, project.repro()


@pytest.fixture()
def project(built: tuple[Project, set[str]], tmp_path: Path) -> Project:
    return built[0].copy(tmp_path)


def pool(project: Project) -> set[str]:
    return {r["id"] for r in pl.read_parquet(project.path / "data/prompts.parquet").to_dicts() if r["split"] == "pool"}


def routed(project: Project) -> dict[str, dict[str, set[str]]]:
    """student → teacher → routed pool prompt ids."""
    ids = pool(project)
    return {s: {p.stem: set(pl.read_parquet(p)["id"].to_list()) & ids
                for p in (project.path / "data/routes" / s).glob("*.parquet")} for s in STUDENTS}


def route_files(project: Project) -> dict[tuple[str, str], bytes]:
    """(student, teacher) → its route file's bytes (router-subset prompts too): what generate@S-T depends on."""
    return {(p.parent.name, p.stem): p.read_bytes() for p in (project.path / "data/routes").glob("*/*.parquet")}


def generated(project: Project, stage: str) -> int:
    return json.loads(project.file_bytes(f"runs/{stage}.json"))["generated"]


def test_teachers_answer_once_and_each_student_gets_its_own_branch(built: tuple[Project, set[str]]) -> None:
    project, ran = built
    assert ran == SHARED | branch("plain") | branch("small")
    assert generated(project, "sample@a") == generated(project, "sample@base") == 10  # S once, for both students
    routes, sharing = routed(project), json.loads(project.file_bytes("metrics/sharing.json"))
    for teacher in TEACHERS:  # a prompt both students route to a teacher is generated once: the second is a cache hit
        union = routes["plain"].get(teacher, set()) | routes["small"].get(teacher, set())
        requested = sum(len(routes[s].get(teacher, set())) for s in STUDENTS)
        assert sum(generated(project, f"generate@{s}-{teacher}") for s in STUDENTS) == len(union)
        assert sharing["teachers"][teacher] | {"students": None} == {
            "requested": requested, "generated": len(union), "shared": requested - len(union), "students": None}
    shared = sum(t["shared"] for t in sharing["teachers"].values())
    assert shared > 0  # these seeds: the two routers agree on some prompts
    assert sharing["generations"]["this_build"] == 2 * 10 + 2 * 14 - shared
    assert sharing["generations"]["separate_builds"] == 2 * (2 * 10 + 14)
    for student in STUDENTS:
        metrics = json.loads(project.file_bytes(f"metrics/{student}/dataset.json"))
        loaded = datasets.load_dataset(str(project.path / "data/dataset" / student), split="train")
        assert len(loaded) == metrics["records"] == 24
        assert sum(t["prompts"] for t in json.loads(project.file_bytes(f"metrics/{student}/route.json"))["teachers"]
                   .values()) == 24
    shown = json.loads(project.run("dvc", "metrics", "show", "--json").stdout)
    files = {f for rev in shown.values() for f in rev["data"]}
    assert {f"metrics/{s}/{m}.json" for s in STUDENTS for m in ("router", "route", "dataset", "train", "eval")} <= files
    assert "+chat_template:" in json.loads(project.file_bytes("data/models/students/plain.json"))["identity"]
    assert "chat_template" not in json.loads(project.file_bytes("data/models/students/small.json"))["identity"]
    assert json.loads(project.file_bytes("metrics/plain/train.json"))["records"] == 24
    project.run("persyn", "plan", "--json", "plan.json")
    assert json.loads(project.file_bytes("plan.json"))["generations"]["routed"] == sharing["generations"]


def test_a_train_override_reruns_only_that_students_training(project: Project) -> None:
    locked = project.lock_hashes()
    project.set_param("[students.small]\n", "[students.small]\ntrain = { lr = 0.003 }\n")
    # the student's table changed: its scores and assemble re-run too (from the cache, byte-identical); nothing of plain's
    assert project.repro() == {"models", "score@small-a", "score@small-base", "assemble@small", "train@small",
                               "evaluate@small"}
    after = project.lock_hashes()
    changed = {p for p, h in after.items() if h != locked[p]}
    assert "data/student/small" in changed and changed <= {
        "data/student/small", "metrics/small/train.json", "plots/small/train_loss.csv",
        "data/eval/small/predictions.parquet", "metrics/small/eval.json", "plots/small/accuracy.csv"}


def test_new_weights_for_one_student_rerun_only_its_branch(project: Project, tiny_models: dict[str, Path]) -> None:
    before, plain_lock = routed(project), {p: h for p, h in project.lock_hashes().items() if "plain" in p}
    order, files = project.file_bytes("data/route_order/small.parquet"), route_files(project)
    (project.path / "models/student/model.safetensors").write_bytes((tiny_models["teacher_b"] / "model.safetensors")
                                                                     .read_bytes())
    ran = project.repro()
    after = routed(project)
    moved = {t for t in TEACHERS if route_files(project).get(("small", t)) != files.get(("small", t))}
    expected = {"models", "score@small-a", "score@small-base", "fit_router@small", "route@small", "assemble@small",
                "train@small", "evaluate@small"} | {f"generate@small-{t}" for t in moved}
    expected |= {"sharing"} if moved else set()
    expected |= {"fallback@small"} if moved or project.file_bytes("data/route_order/small.parquet") != order else set()
    assert ran == expected
    for teacher in moved:  # only what neither student had routed to the teacher is generated
        known = before["small"].get(teacher, set()) | before["plain"].get(teacher, set())
        assert generated(project, f"generate@small-{teacher}") == len(after["small"][teacher] - known)
    assert {p: h for p, h in project.lock_hashes().items() if "plain" in p} == plain_lock


def test_adding_a_teacher_then_removing_it(project: Project) -> None:
    original, before, files = project.lock_hashes(), routed(project), route_files(project)
    project.set_param("[students.plain]", ADD_C)
    ran = project.repro()
    after, outs = routed(project), project.lock_hashes()
    moved = {(s, t) for s in STUDENTS for t in TEACHERS if route_files(project).get((s, t)) != files.get((s, t))}
    expected = {"models", "sample@c", "sharing"} | {f"generate@{s}-{t}" for s, t in moved}
    for s in STUDENTS:
        expected |= {f"score@{s}-c", f"fit_router@{s}", f"route@{s}", f"generate@{s}-c", f"fallback@{s}", f"assemble@{s}"}
        expected |= {f"train@{s}"} if outs[f"data/dataset/{s}"] != original[f"data/dataset/{s}"] else set()
        expected |= {f"evaluate@{s}"} if outs[f"data/student/{s}"] != original[f"data/student/{s}"] else set()
    assert ran == expected  # no other teacher's sample or scores, nothing of prompts or embed
    for teacher in TEACHERS:  # an old teacher generates only prompts that no student had routed to it before
        old = before["plain"].get(teacher, set()) | before["small"].get(teacher, set())
        new = after["plain"].get(teacher, set()) | after["small"].get(teacher, set())
        made = sum(generated(project, f"generate@{s}-{teacher}") for s in STUDENTS if (s, teacher) in moved)
        assert made == len(new - old)
    assert set(json.loads(project.file_bytes("metrics/sharing.json"))["teachers"]) == {"a", "base", "c"}

    project.set_param(ADD_C, "[students.plain]")
    ran = project.repro()
    assert not ran & ({"prompts", "embed", "sample@a", "sample@base"} | {f"score@{s}-{t}" for s in STUDENTS for t in TEACHERS})
    assert {f"fit_router@{s}" for s in STUDENTS} <= ran  # the stale data/scores/<s>/c.parquet does not hide the change
    assert all(generated(project, stage) == 0 for stage in ran if stage.startswith("generate@"))
    locked = project.lock_hashes()  # every output is back, byte for byte: nothing another stage needs was lost
    assert {p: h for p, h in locked.items() if p in original} == original
    # DVC keeps the removed stages' dvc.lock entries (and their files): only c's outputs are left over
    assert set(locked) - set(original) == {"data/sample/c.parquet"} | {
        f"data/{kind}/{s}/c.parquet" for s in STUDENTS for kind in ("scores", "generated")}
    assert project.repro() == set()
    for student in STUDENTS:
        router = json.loads(project.file_bytes(f"data/router/{student}/router.json"))
        assert router["teachers"] == ["a", "base"]


def commit(project: Project, message: str) -> None:
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def test_release_one_student_or_every_student(project: Project) -> None:
    commit(project, "build")
    project.run("persyn", "release", "0.1.0", "--student", "small")
    assert project.run("git", "tag").stdout.split() == ["tiny-small@v0.1.0"]
    project.run("persyn", "release", "0.2.0")
    assert project.run("git", "tag").stdout.split() == ["tiny-plain@v0.2.0", "tiny-small@v0.1.0", "tiny-small@v0.2.0"]
    artifacts = yaml.safe_load(project.file_bytes("dvc.yaml"))["artifacts"]
    assert {name: a["path"] for name, a in artifacts.items()} == {"tiny-small": "releases/tiny-small/v0.2.0",
                                                                 "tiny-plain": "releases/tiny-plain/v0.2.0"}
    for student in STUDENTS:
        target = project.path / f"releases/tiny-{student}/v0.2.0"
        provenance = json.loads((target / "provenance.json").read_text())
        assert provenance["student_name"] == student and provenance["tag"] == f"tiny-{student}@v0.2.0"
        assert provenance["metrics"]["eval"] == json.loads(project.file_bytes(f"metrics/{student}/eval.json"))
        assert len(datasets.load_dataset(str(target), split="train")) == 24
    assert project.run("git", "status", "--porcelain").stdout == ""
