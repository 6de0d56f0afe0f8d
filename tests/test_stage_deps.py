"""dvc.yaml's code and schema deps are exactly what each stage runs and reads, computed here from the
source, so they cannot drift: the stage script, its import closure inside persyn/ (persyn/engines
as one directory dep, since engines are imported by name at run time), and every schema the
closure names in a read/write/check call. Every artifact path a stage script names is one of its
declared deps or outputs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENGINES = "persyn/engines"
# persyn.io / persyn.schemas calls whose string argument at this position names a schema
SCHEMA_ARGUMENT = {"read_parquet": 1, "write_parquet": 2, "read_json": 1, "write_json": 2, "check": 1,
                   "check_records": 1, "validator": 0}
ARTIFACT = re.compile(r"(data|metrics|plots)/[\w.${}/-]+")
FIELD = re.compile(r"\$\{(key|item\.\w+)\}")  # foreach's ${key}, matrix's ${item.<axis>}: a stage script's f-string field


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


def artifact_paths(script: str) -> set[str]:
    """Every whole string (or f-string, its fields as ${key}) in a stage script that is an artifact path."""
    paths = set()
    tree = ast.parse((ROOT / script).read_text())
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "${key}" for v in node.values)
        else:
            continue
        if ARTIFACT.fullmatch(text):
            paths.add(text)
    return paths


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_path_a_stage_names_is_declared(name: str) -> None:
    stage = stages()[name]
    declared_paths = [FIELD.sub("${key}", d) for d in declared(stage, "deps", "outs", "metrics", "plots")]
    for path in artifact_paths(script_of(stage)):
        assert any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared_paths), \
            f"stages/{name}: {path} is neither a dep nor an output of stage {name} in dvc.yaml"


def test_the_closure_finds_what_is_imported() -> None:
    """The check itself: assemble reaches the runner through rewards, prompts does not (every stage reaches
    the engines: config.load checks each engine's options)."""
    assert {"persyn/runner.py", ENGINES, "persyn/chat.py", "persyn/models.py", "schemas/params.schema.json",
            "schemas/dataset_record.schema.json"} <= closure("stages/assemble.py")
    assert "persyn/runner.py" not in closure("stages/prompts.py")
    assert "data/sample/${key}.parquet" in artifact_paths("stages/sample.py")
