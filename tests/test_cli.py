"""Every `persyn` --help page says what its command does and what each argument means."""

from __future__ import annotations

import argparse

import pytest

from persyn import cli

PARSER = cli.build_parser()
SUBCOMMANDS: dict[str, argparse.ArgumentParser] = next(
    a.choices for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_help_page_has_a_description_and_every_argument_a_help(name: str) -> None:
    parser = SUBCOMMANDS[name]
    assert parser.description and len(parser.description) > 15, f"persyn {name} --help has no description"
    unexplained = [a.dest for a in parser._actions if not a.help]
    assert not unexplained, f"persyn {name}: arguments without help: {unexplained}"


def test_params_option_and_diff_revisions_are_explained() -> None:
    assert "params file" in next(a.help for a in PARSER._actions if a.dest == "params")
    page = SUBCOMMANDS["diff"].format_help()
    assert "REV_A" in page and "DVC experiment" in page and "dvc pull" in page
