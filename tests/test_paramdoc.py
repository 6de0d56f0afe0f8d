"""docs/params.md is generated from the params schema and the committed params.toml: it must be
current, list every key, and show code defaults beside what params.toml sets."""

from pathlib import Path

import pytest

from persyn import cli
from persyn.params import config, paramdoc
from persyn.core.schemas import resolved

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "params.md"


@pytest.fixture(scope="module")
def page() -> str:
    return paramdoc.markdown(config.read(ROOT / "params.toml"))


def test_docs_params_md_is_current(page: str) -> None:
    assert DOC.is_file() and DOC.read_bytes() == page.encode("utf-8"), \
        f"docs/params.md is stale: regenerate it with `{paramdoc.COMMAND}` and commit it"


def test_every_schema_key_has_a_row(page: str) -> None:
    def keys(node: dict, prefix: str):
        node = resolved(node, config.SCHEMA)
        if isinstance(node.get("additionalProperties"), dict):
            node, prefix = resolved(node["additionalProperties"], config.SCHEMA), f"{prefix}<name>."
            yield from (f"{prefix}{name}" for name in node["properties"])
            return
        for name, child in node.get("properties", {}).items():
            yield f"{prefix}{name}"
            yield from keys(child, f"{prefix}{name}.")

    rows = [line.split(" | ")[0].removeprefix("| ") for line in page.splitlines() if line.startswith("| `")]
    tables = config.SCHEMA["properties"]
    assert rows == [f"`{key}`" for name, table in tables.items() for key in keys(table, f"{name}.")]
    assert len(rows) > 90


def test_rows_give_the_code_default_and_what_params_toml_sets(page: str) -> None:
    assert "| `generation.max_tokens` | integer | `256` | `96` | ≥ 1 |" in page
    assert "| `router.alpha` | number | *required* | `0.4` | ≥ 0, ≤ 1 |" in page
    assert "| `teachers.<name>.stop` | array of string | from `[generation]` | gemma: `[\"\\nQuestion:\", \"\\n\\n\"]` |" in page
    assert "| `route.budget` | table | — |  |" in page
    assert "| `router.head` | string | `\"linear\"` |  | `\"linear\"` \\| `\"mlp\"` \\| `\"lm\"` |" in page


def test_the_command_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture, page: str) -> None:
    target = tmp_path / "params.md"
    cli.main(["--params", str(ROOT / "params.toml"), *paramdoc.COMMAND.split()[1:-1], str(target)])
    assert target.read_text(encoding="utf-8") == capsys.readouterr().out == page


def test_an_invalid_params_file_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = tmp_path / "params.toml"
    params.write_text((ROOT / "params.toml").read_text().replace("alpha = 0.4", "alpha = 4"))
    with pytest.raises(SystemExit) as caught:
        cli.main(["--params", str(params), "params", "--markdown", str(tmp_path / "params.md")])
    assert caught.value.code == 2 and not (tmp_path / "params.md").exists()
    assert capsys.readouterr().err == f"persyn: error: {params}: router.alpha: 4 is greater than the maximum of 1\n"
