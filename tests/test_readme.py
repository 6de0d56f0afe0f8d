"""What the README (and any docs/*.md) tells a user to type is valid: every params.toml snippet,
merged into the default params, parses and its engine options are accepted; every `persyn` command
in a bash block or an inline code span parses with persyn's own argument parser; every `dvc`
command names a real subcommand with real flags. Fewer snippets than the docs hold today fails
(a suite whose snippets disappear must not pass by skipping)."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from persyn import cli, config, engines

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = "\n".join(path.read_text() for path in DOCS)
SNIPPETS = re.findall(r"```toml\n(.*?)```", TEXT, flags=re.S)
SEPARATORS = {"&&", "||", ";", "|", "&"}


def commands() -> list[list[str]]:
    """Every persyn/dvc command line: from bash blocks (comments and placeholders <…> allowed) and
    from inline code spans (`persyn report [--rev REV]`: brackets mark optional parts)."""
    lines = [line for block in re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S) for line in block.splitlines()]
    lines += [span.replace("[", "").replace("]", "") for span in re.findall(r"`((?:persyn|dvc) [^`]+)`", TEXT)]
    found = []
    for line in lines:
        line = re.sub(r"<([^<>\s]+)>", r"\1", line.replace("…", "x"))  # <rev-a>: a placeholder, not a redirection
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, segment = True, []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                if segment and segment[0] in ("persyn", "dvc"):
                    found.append(segment)
                segment = []
            else:
                segment.append(token)
    return found


COMMANDS = commands()
PERSYN = [c for c in COMMANDS if c[0] == "persyn"]
DVC = [c for c in COMMANDS if c[0] == "dvc"]


def test_the_docs_still_hold_their_snippets() -> None:
    """The parametrised tests below would silently skip on an empty list: counted here instead."""
    assert len(SNIPPETS) >= 5, f"{len(SNIPPETS)} toml snippets in {[p.name for p in DOCS]}"
    assert len(PERSYN) >= 15 and len(DVC) >= 15, (len(PERSYN), len(DVC))


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_is_valid_params(snippet: str) -> None:
    raw = merged(tomllib.loads((ROOT / "params.toml").read_text()), tomllib.loads(snippet))
    params = config.parse(raw, "README.md")
    for teacher in params.teachers.values():
        engines.answering_engine(teacher.sampling.engine, teacher.sampling.engine_options)
    engines.parse_options(params.student.engine, params.student.engine_options)


@pytest.mark.parametrize("command", PERSYN, ids=[" ".join(c) for c in PERSYN])
def test_persyn_command_parses(command: list[str], capsys: pytest.CaptureFixture) -> None:
    try:
        cli.build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"`{' '.join(command)}` does not parse: {capsys.readouterr().err}")


@functools.cache
def dvc_help(*words: str) -> str:
    result = subprocess.run(["dvc", *words, "--help"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def subcommands(help_text: str) -> set[str]:
    """A command group's subcommands, from the `{apply,branch,…}` of its usage line."""
    usage = help_text.split("\n\n")[0]
    return {name for group in re.findall(r"\{([\w,-]+)\}", usage) for name in group.split(",")}


@pytest.mark.parametrize("command", DVC, ids=[" ".join(c) for c in DVC])
def test_dvc_command_and_flags_exist(command: list[str]) -> None:
    words = command[1:2]
    if len(command) > 2 and command[2] in subcommands(dvc_help(*words)):
        words.append(command[2])
    text = dvc_help(*words)
    assert text, f"`dvc {' '.join(words)}` is not a dvc command"
    for flag in (t.split("=")[0] for t in command[1:] if t.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"`dvc {' '.join(words)}` has no flag {flag}"
