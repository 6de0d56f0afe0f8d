"""Every params.toml snippet in the README is valid: merged into the default params, it parses and
its engine options are accepted by its engines."""

import re
import sys
from pathlib import Path

import pytest

from persyn import config, engines

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
SNIPPETS = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


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
