"""Every README command that needs no build works in a fresh clone of HEAD (no outputs, no DVC cache,
no remote), run with the clone's own code: the dry run lists every stage, the graph is readable,
`persyn diff` is one line, `persyn plan` and `persyn check` run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_BUILD = ("dvc repro --dry", "dvc dag", "persyn diff", "persyn plan", "persyn check")


def everyday() -> dict[str, list[str]]:
    """The README's "Everyday use" commands that need no build, by their first words."""
    block = re.search(r"## Everyday use\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert block, "README.md has no Everyday use block"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    found = {start: shlex.split(line) for line in lines for start in NO_BUILD if line.startswith(start)}
    assert set(found) == set(NO_BUILD), f"README's Everyday use lacks {set(NO_BUILD) - set(found)}"
    return found


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("clone") / "persyn"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    return target


def run(clone: Path, command: list[str]) -> subprocess.CompletedProcess:
    """dvc through this interpreter; persyn from the clone's own source, not the installed tree."""
    program = [sys.executable, "-m", "dvc"] if command[0] == "dvc" else \
        [sys.executable, "-c", "from persyn.cli import main; main()"]
    env = {**os.environ, "PYTHONPATH": str(clone), "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([*program, *command[1:]], cwd=clone, env=env, capture_output=True, text=True, timeout=300)


def test_dry_run_lists_every_stage(clone: Path) -> None:
    result = run(clone, everyday()["dvc repro --dry"])
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"Running stage '([^']+)'", result.stdout))
    stages = set(run(clone, ["dvc", "stage", "list", "--name-only"]).stdout.split())
    assert listed == stages and "models" in listed


def test_the_graph_command_is_readable(clone: Path) -> None:
    result = run(clone, everyday()["dvc dag"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "flowchart" in result.stdout and '["assemble"]' in result.stdout
    assert len(lines) < 80 and max(map(len, lines)) <= 100


def test_diff_without_outputs_is_one_line(clone: Path) -> None:
    result = run(clone, everyday()["persyn diff"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "is not in the local DVC cache" in result.stderr


@pytest.mark.parametrize("start", ["persyn plan", "persyn check"])
def test_plan_and_check_run(clone: Path, start: str) -> None:
    result = run(clone, everyday()[start])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
