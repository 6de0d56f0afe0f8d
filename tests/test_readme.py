"""What the README and docs/*.md tell a user to type is valid: every params.toml snippet, merged
into the default params, parses and its engine options are accepted; every `persyn` command in a
bash block or an inline code span parses with persyn's own argument parser; every `dvc` command
names a real subcommand with real flags; every relative link between them reaches a file and, for
`#anchor`s, a heading. The README stays short and its test command is the one CI runs. Fewer
snippets or commands than the docs hold today fails (a suite whose snippets disappear, or move to
a file nobody reads, must not pass by skipping)."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from persyn import cli, engines
from persyn.params import config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {"&&", "||", ";", "|", "&"}
FENCE = re.compile(r"^```.*?^```[ \t]*$", flags=re.S | re.M)
# What README.md and docs/ hold today: raise these when you add some, never lower them to pass.
FLOOR = {"toml snippets": 7, "persyn commands": 43, "dvc commands": 50, "relative links": 27}


def snippets() -> list[tuple[str, str]]:
    return [(path.name, block) for path in DOCS for block in re.findall(r"```toml\n(.*?)```", path.read_text(), flags=re.S)]


def command_lines(text: str) -> list[str]:
    """Lines of bash blocks (comments and placeholders <…> allowed) and inline code spans
    (`persyn report [--rev REV]`: brackets mark optional parts)."""
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in block.splitlines()]
    return lines + [span.replace("[", "").replace("]", "") for span in re.findall(r"`((?:persyn|dvc) [^`]+)`", text)]


def commands() -> list[tuple[str, list[str]]]:
    """Every persyn/dvc command line, with the file it is in."""
    found = []
    for path in DOCS:
        for line in command_lines(path.read_text()):
            line = re.sub(r"<([^<>\s]+)>", r"\1", line.replace("…", "x"))  # <rev-a>: a placeholder, not a redirection
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, segment = True, []
            for token in [*lexer, ";"]:
                if token in SEPARATORS:
                    if segment and segment[0] in ("persyn", "dvc"):
                        found.append((path.name, segment))
                    segment = []
                else:
                    segment.append(token)
    return found


def prose(path: Path) -> str:
    """The text outside fenced blocks, where links and headings are markdown and not code."""
    return FENCE.sub("", path.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (code ticks, brackets) dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(path), flags=re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return frozenset(found)


def links() -> list[tuple[Path, str]]:
    """Every relative link target in README and docs (web addresses are not checked: no network)."""
    found = []
    for path in DOCS:
        text = re.sub(r"`[^`\n]*`", "", prose(path))
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):
                found.append((path, target))
    return list(dict.fromkeys(found))


SNIPPETS = snippets()
COMMANDS = commands()
PERSYN = [c for c in COMMANDS if c[1][0] == "persyn"]
DVC = [c for c in COMMANDS if c[1][0] == "dvc"]
LINKS = links()


def test_the_docs_still_hold_their_snippets() -> None:
    """The parametrised tests below would silently skip on an empty list: counted here instead."""
    counts = {"toml snippets": len(SNIPPETS), "persyn commands": len(PERSYN), "dvc commands": len(DVC),
              "relative links": len(LINKS)}
    short = {kind: f"{counts[kind]} < {floor}" for kind, floor in FLOOR.items() if counts[kind] < floor}
    assert not short, f"fewer checked than the docs held: {short} in {[p.name for p in DOCS]}"


def test_docs_folder_is_read() -> None:
    names = {path.name for path in DOCS}
    assert {"README.md", "engines.md", "results.md", "cache.md", "releases-and-report.md"} <= names, names


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move reference material to docs/ (at most 200)"


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's second command is the one .ci/run runs in a fresh clone, character for character."""
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    setup = [line for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
             for line in block.splitlines() if line.startswith("python3 -m venv")]
    assert ci in setup, f".ci/run runs `{ci}`, which the README does not show"
    build = ci.replace("-e '.[test]'", "-e .").removesuffix("pytest") + "dvc repro"
    assert build in setup, f"the README's build command is not the CI set-up followed by dvc repro: {setup}"


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@pytest.mark.parametrize("where, snippet", SNIPPETS, ids=[f"{name}:snippet{i}" for i, (name, _) in enumerate(SNIPPETS)])
def test_readme_snippet_is_valid_params(where: str, snippet: str) -> None:
    raw = merged(tomllib.loads((ROOT / "params.toml").read_text()), tomllib.loads(snippet))
    params = config.parse(raw, where)
    for teacher in params.teachers.values():
        engines.answering_engine(teacher.sampling.engine, teacher.sampling.engine_options)
    engines.parse_options(params.student.engine, params.student.engine_options)


@pytest.mark.parametrize("where, command", PERSYN, ids=[f"{name}:{' '.join(c)}" for name, c in PERSYN])
def test_persyn_command_parses(where: str, command: list[str], capsys: pytest.CaptureFixture) -> None:
    try:
        cli.build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{' '.join(command)}` does not parse: {capsys.readouterr().err}")


@functools.cache
def dvc_help(*words: str) -> str:
    result = subprocess.run(["dvc", *words, "--help"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def subcommands(help_text: str) -> set[str]:
    """A command group's subcommands, from the `{apply,branch,…}` of its usage line."""
    usage = help_text.split("\n\n")[0]
    return {name for group in re.findall(r"\{([\w,-]+)\}", usage) for name in group.split(",")}


@pytest.mark.parametrize("where, command", DVC, ids=[f"{name}:{' '.join(c)}" for name, c in DVC])
def test_dvc_command_and_flags_exist(where: str, command: list[str]) -> None:
    words = command[1:2]
    if len(command) > 2 and command[2] in subcommands(dvc_help(*words)):
        words.append(command[2])
    text = dvc_help(*words)
    assert text, f"{where}: `dvc {' '.join(words)}` is not a dvc command"
    for flag in (t.split("=")[0] for t in command[1:] if t.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{where}: `dvc {' '.join(words)}` has no flag {flag}"


@pytest.mark.parametrize("source, target", LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_relative_link_resolves(source: Path, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    destination = (source.parent / file_part).resolve() if file_part else source
    assert destination.exists(), f"{source.name}: link {target}: {destination.relative_to(ROOT)} does not exist"
    if anchor:
        assert destination.suffix == ".md", f"{source.name}: link {target}: an anchor into a file that is not markdown"
        assert anchor in anchors(destination), (
            f"{source.name}: link {target}: no heading with anchor #{anchor} in {destination.name}; "
            f"its anchors: {sorted(anchors(destination))}")


@pytest.mark.parametrize("text, anchor", [
    ("CTranslate2 (`engine = \"ctranslate2\"`)", "ctranslate2-engine--ctranslate2"),
    ("Does routing help? Every strategy, with confidence intervals",
     "does-routing-help-every-strategy-with-confidence-intervals"),
    ("The paper's two settings at GPU scale", "the-papers-two-settings-at-gpu-scale"),
    ("Experiments: sweeping α and comparing strategies", "experiments-sweeping-α-and-comparing-strategies"),
])
def test_anchor_slugs_follow_github(text: str, anchor: str) -> None:
    assert slug(text) == anchor
