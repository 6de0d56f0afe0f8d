"""The library's floors (issue 29): persyn/ holds a few subpackages, each named for what it is, and a
module imports only from its own floor or the floors below it, so no arrow points back up. No module
is longer than one sitting's read (400 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERSYN = ROOT / "persyn"
FLOORS = ["core", "engines", "sources", "params", "pipeline", "science", "project", "report", "cli", "testing"]  # bottom to top


def floor_of(module: str) -> str | None:
    """persyn.<floor>.x → <floor>; persyn.cli → cli; persyn itself → None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(root: Path) -> list[str]:
    """Every import from a floor above the importing module's, as 'file: module'."""
    found = []
    for path in sorted(root.rglob("*.py")):
        here = floor_of(".".join(path.relative_to(root.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                there = floor_of(name) if name.startswith("persyn.") else None
                if here in FLOORS and there in FLOORS and FLOORS.index(there) > FLOORS.index(here):
                    found.append(f"{path.relative_to(root.parent)}: {name}")
    return found


def test_the_top_level_shows_the_floors() -> None:
    entries = sorted(p.name for p in PERSYN.iterdir() if p.name != "__pycache__")
    assert entries == sorted(["__init__.py", "cli.py", *(f for f in FLOORS if f != "cli")])
    for floor in (f for f in FLOORS if f != "cli"):
        assert ast.get_docstring(ast.parse((PERSYN / floor / "__init__.py").read_text())), f"{floor} says what it is"


def test_no_import_points_back_up() -> None:
    assert upward_imports(PERSYN) == []


def test_a_planted_upward_import_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "persyn" / "core"
    planted.mkdir(parents=True)
    (planted / "io.py").write_text("from persyn.pipeline import route\nfrom persyn.core import errors\n")
    assert upward_imports(tmp_path / "persyn") == ["persyn/core/io.py: persyn.pipeline"]


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in [*PERSYN.rglob("*.py"), *(ROOT / "stages").glob("*.py"),
                                                  *(ROOT / "bench").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
