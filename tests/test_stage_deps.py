"""dvc.yaml's code and schema deps are exactly what each stage runs and reads, computed here from the
source, so they cannot drift: the stage script, its import closure inside persyn/ (persyn/engines
as one directory dep, since engines are imported by name at run time), and every schema the
closure names in a read/write/check call.

Artifact paths are named once, in persyn/core/layout.py: every data dep and output dvc.yaml declares is
a path layout names and every path layout names is in dvc.yaml (run logs and releases aside), every
path a stage script takes from layout is one of its declared deps or outputs, and no other file of
persyn/, stages/ or bench/ spells one out. Planted drifts show that each check fails."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from persyn.core import layout

ROOT = Path(__file__).resolve().parents[1]
ENGINES = "persyn/engines"
# persyn.core.io / persyn.core.schemas calls whose string argument at this position names a schema
SCHEMA_ARGUMENT = {"read_parquet": 1, "write_parquet": 2, "read_json": 1, "write_json": 2, "check": 1,
                   "check_records": 1, "validator": 0}
ARTIFACT = re.compile(r"(data|metrics|plots)/[\w.${}/-]+")
FIELD = re.compile(r"\$\{(key|item\.\w+)\}")  # foreach's ${key}, matrix's ${item.<axis>}: a stage script's f-string field
KEY = "${key}"  # what every field becomes, in dvc.yaml's paths and as the name passed to a layout function
CODE = ("stages/", "persyn/", "schemas/", "requirements-models.txt")  # deps that are code, not artifacts
# layout names that are no DVC dep or output: the run logs (git-ignored) and what `persyn release` writes
NOT_IN_DVC = {"RUNS", "run_log", "RELEASES", "RELEASE_DATA", "RELEASE_SHARDS", "release"}
# the grep of issue 29: a path spelt out ("data/… or metrics/…) anywhere but in persyn/core/layout.py
SPELT_OUT = re.compile(r'"data/|metrics/')


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> str | None:
    """persyn/x.py or persyn/x/__init__.py for the dotted module name, None if there is none."""
    base = ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Dotted persyn modules an AST imports anywhere (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "persyn")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "persyn":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}"))
    with_parents = set(found)
    for name in found:  # importing persyn.x runs persyn/__init__.py too
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return with_parents


def schema_literals(tree: ast.AST) -> dict[str | None, set[str]]:
    """Schema names in read/write/check calls, by the top-level function holding them (None: module level)."""
    found: dict[str | None, set[str]] = {}
    for top in getattr(tree, "body", []):
        owner = top.name if isinstance(top, (ast.FunctionDef, ast.ClassDef)) else None
        for node in ast.walk(top):
            if not isinstance(node, ast.Call):
                continue
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if function not in SCHEMA_ARGUMENT:
                continue
            position = SCHEMA_ARGUMENT[function]
            argument = node.args[position] if len(node.args) > position else next(
                (k.value for k in node.keywords if k.arg in ("schema", "name")), None)
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.setdefault(owner, set()).add(argument.value)
    return found


def used_functions(tree: ast.AST, module: str) -> set[tuple[str, str]]:
    """(module, name) pairs a file refers to: `from persyn.m import f`, `m.f` for a bound persyn
    module m, and bare names inside the file's own module."""
    bound: dict[str, str] = {}
    used: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("persyn"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if module_file(target):
                    bound[alias.asname or alias.name] = target
                used.add((str(node.module), alias.name))
        elif isinstance(node, ast.Import):
            bound.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("persyn")})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            used.add((bound[node.value.id], node.attr))
        elif isinstance(node, ast.Name):
            used.add((module, node.id))
    return used


def closure(script: str) -> set[str]:
    """The files a stage script runs and the schemas they read: what its deps must list. Reaching
    any engine means all of them: they are imported by name at run time. A schema counts where the
    function naming it is used (io's read_embeddings is not every stage's)."""
    files: set[str] = set()
    trees: dict[str, ast.AST] = {}
    todo = [script]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        trees[path] = ast.parse((ROOT / path).read_text(), path)
        for module in imported_modules(trees[path], str(Path(path).parent).replace("/", ".")):
            file = module_file(module)
            assert file, f"{path} imports {module}, which has no file"
            todo.append(file)
            if file.startswith(ENGINES + "/"):
                todo.extend(e.relative_to(ROOT).as_posix() for e in (ROOT / ENGINES).glob("*.py"))

    def dotted(path: str) -> str:
        return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")

    used = {pair for path, tree in trees.items() for pair in used_functions(tree, dotted(path))}
    schemas = {name for path, tree in trees.items() for owner, names in schema_literals(tree).items()
               if owner is None or path == script or (dotted(path), owner) in used for name in names}
    missing = sorted(s for s in schemas if not (ROOT / "schemas" / f"{s}.schema.json").is_file())
    assert not missing, f"{script} names schemas that do not exist: {missing}"
    return {ENGINES if f.startswith(ENGINES + "/") else f for f in files} | {f"schemas/{s}.schema.json" for s in schemas}


def script_of(stage: dict) -> str:
    command = stage.get("do", stage)["cmd"].split()
    assert command[0] == "python" and command[1].startswith("stages/"), command
    return command[1]


def declared(stage: dict, *kinds: str) -> list[str]:
    body = stage.get("do", stage)
    return [next(iter(item)) if isinstance(item, dict) else item for kind in kinds for item in body.get(kind, [])]


@pytest.mark.parametrize("name", sorted(stages()))
def test_code_and_schema_deps_are_the_import_closure(name: str) -> None:
    stage = stages()[name]
    listed = {d for d in declared(stage, "deps") if d.startswith(("stages/", "persyn/", "schemas/"))}
    needed = closure(script_of(stage))
    assert not needed - listed, f"dvc.yaml stage {name} misses deps: {sorted(needed - listed)}"
    assert not listed - needed, f"dvc.yaml stage {name} lists deps it does not use: {sorted(listed - needed)}"


def layout_paths() -> dict[str, str]:
    """Every path persyn/core/layout.py names → the name it goes by: each path constant, and each function
    called with KEY for a student or teacher and with every value of a Literal (metrics' and plots' names)."""
    named = {value: name for name, value in vars(layout).items() if name.isupper() and isinstance(value, str)}
    for name, function in vars(layout).items():
        if name.startswith("_") or not inspect.isfunction(function):
            continue
        hints = typing.get_type_hints(function)
        choices = [typing.get_args(hints[p]) if typing.get_origin(hints.get(p)) is typing.Literal else (KEY,)
                   for p in inspect.signature(function).parameters]
        named.update({function(*arguments): name for arguments in itertools.product(*choices)})
    return named


def dvc_paths(parsed: dict[str, dict]) -> dict[str, list[str]]:
    """Every artifact path dvc.yaml declares (deps that are not code, outs, metrics, plots), its fields as
    KEY → the stages declaring it."""
    found: dict[str, list[str]] = {}
    for name, stage in sorted(parsed.items()):
        for path in declared(stage, "deps", "outs", "metrics", "plots"):
            if not path.startswith(CODE):
                found.setdefault(FIELD.sub(KEY, path), []).append(name)
    return found


def drift(parsed: dict[str, dict], named: dict[str, str]) -> list[str]:
    """Where dvc.yaml and persyn/core/layout.py disagree: a declared path layout does not name, or a layout
    path that is neither declared nor inside (or above) a declared one."""
    declared_paths = dvc_paths(parsed)
    found = [f"dvc.yaml ({', '.join(stages)}): {path} is not a path persyn/core/layout.py names"
             for path, stages in declared_paths.items() if path not in named]
    for path, name in sorted(named.items()):
        if name not in NOT_IN_DVC and not any(path == d or path.startswith(d + "/") or d.startswith(path + "/")
                                              for d in declared_paths):
            found.append(f"persyn/core/layout.py {name}: {path} is no dep or output of any stage in dvc.yaml")
    return found


def test_dvc_yaml_declares_the_paths_layout_names() -> None:
    problems = drift(stages(), layout_paths())
    assert not problems, "\n".join(problems)


def test_a_path_changed_in_dvc_yaml_alone_fails() -> None:
    planted = stages()
    deps = planted["embed"]["deps"]
    deps[deps.index("data/prompts.parquet")] = "data/prompt.parquet"
    assert drift(planted, layout_paths()) == [
        "dvc.yaml (embed): data/prompt.parquet is not a path persyn/core/layout.py names"]
    del planted["evaluate"]["do"]["plots"]
    assert "persyn/core/layout.py plot: plots/${key}/accuracy.csv is no dep or output of any stage in dvc.yaml" \
        in drift(planted, layout_paths())


def test_a_path_changed_in_layout_alone_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "EMBEDDINGS", "data/vectors.parquet")
    monkeypatch.setattr(layout, "route_order", lambda student: f"data/order/{student}.parquet")
    problems = drift(stages(), layout_paths())
    assert "dvc.yaml (embed, fit_router, route): data/embeddings.parquet is not a path persyn/core/layout.py names" in problems
    assert "persyn/core/layout.py EMBEDDINGS: data/vectors.parquet is no dep or output of any stage in dvc.yaml" in problems
    assert "persyn/core/layout.py route_order: data/order/${key}.parquet is no dep or output of any stage in dvc.yaml" in problems


def artifact_paths(script: str, source: str | None = None) -> set[str]:
    """Every artifact path a stage script names: each path persyn.core.layout gives it (layout.NAME, and
    layout.f(...) with every argument that is not a string literal as KEY), and each whole string
    (or f-string, its fields as KEY) that is one, which no script should hold (test_no_path_outside_layout)."""
    paths = set()
    tree = ast.parse(source if source is not None else (ROOT / script).read_text())
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call) and from_layout(node.func)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and from_layout(node.func) and node.func.attr not in NOT_IN_DVC:
            arguments: list[Any] = [a.value if isinstance(a, ast.Constant) else KEY for a in node.args]
            paths.add(getattr(layout, node.func.attr)(*arguments))
        elif from_layout(node) and id(node) not in called and node.attr not in NOT_IN_DVC:
            paths.add(getattr(layout, node.attr))
        if id(node) in parts:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else KEY for v in node.values)
        else:
            continue
        if ARTIFACT.fullmatch(text):
            paths.add(text)
    return paths


def from_layout(node: ast.AST) -> typing.TypeGuard[ast.Attribute]:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "layout"


def undeclared(name: str, paths: set[str]) -> list[str]:
    """The paths stage `name`'s script names that are neither its deps nor its outputs in dvc.yaml."""
    declared_paths = [FIELD.sub(KEY, d) for d in declared(stages()[name], "deps", "outs", "metrics", "plots")]
    return sorted(p for p in paths if not any(p == d or p.startswith(d.rstrip("/") + "/") for d in declared_paths))


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_path_a_stage_names_is_declared(name: str) -> None:
    missing = undeclared(name, artifact_paths(script_of(stages()[name])))
    assert not missing, f"stages/{name}.py names {missing}, neither a dep nor an output of stage {name} in dvc.yaml"


def test_a_path_a_stage_does_not_declare_fails() -> None:
    planted = (ROOT / "stages/fit_router.py").read_text() + '\nio.write_json(layout.metrics(student, "route"), {})\n'
    assert undeclared("fit_router", artifact_paths("stages/fit_router.py", planted)) == ["metrics/${key}/route.json"]


def test_no_path_outside_layout() -> None:
    """Issue 29's grep: `grep -rn '"data/\\|metrics/' persyn/ stages/ bench/` finds paths only in persyn/core/layout.py."""
    files = sorted(p for folder in ("persyn", "stages", "bench") for p in (ROOT / folder).rglob("*.py"))
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in files if path != ROOT / "persyn/core/layout.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if SPELT_OUT.search(line)]
    assert not found, "name these paths in persyn/core/layout.py and use them from there:\n" + "\n".join(found)


def test_the_closure_finds_what_is_imported() -> None:
    """The check itself: assemble reaches the runner through rewards, prompts does not (every stage reaches
    the engines: config.load checks each engine's options)."""
    assert {"persyn/pipeline/runner.py", ENGINES, "persyn/core/chat.py", "persyn/core/models.py", "schemas/params.schema.json",
            "schemas/dataset_record.schema.json"} <= closure("stages/assemble.py")
    assert "persyn/pipeline/runner.py" not in closure("stages/prompts.py")
    assert "data/sample/${key}.parquet" in artifact_paths("stages/sample.py")
