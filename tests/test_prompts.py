import json
import re
from pathlib import Path

import polars as pl
import pytest

from persyn.pipeline import prompts
from persyn.sources import arithmetic
from persyn.params.config import PromptsConfig
from persyn.core.errors import PersynError


def test_generator_is_seeded_varied_and_exact() -> None:
    first = arithmetic.generate(300, seed=7)
    assert first == arithmetic.generate(300, seed=7)
    assert first != arithmetic.generate(300, seed=8)
    assert all(int(p["reference"]) >= 0 and p["reference"].isdigit() for p in first)
    assert len({re.sub(r"\d+|[A-Z][a-z]+", "#", p["prompt"]) for p in first}) >= 10  # templates in use
    assert len({p["prompt"].split()[0] for p in first}) >= 10  # varied names


@pytest.mark.parametrize("template", arithmetic.TEMPLATES)
def test_each_template_answer_matches_its_numbers(template) -> None:
    import random

    for seed in range(50):
        text, answer = template(random.Random(seed), "Ava", "Ben", "coins")
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        assert isinstance(answer, int) and answer >= 0
        assert numbers, text
        if template is arithmetic._add:
            assert answer == numbers[0] + numbers[1]
        if template is arithmetic._wage:
            assert answer == numbers[0] * numbers[1] - numbers[2]
        if template is arithmetic._split_bags:
            assert answer * numbers[3] == numbers[0] * numbers[1] + numbers[2]


def test_ids_are_stable_content_hashes_and_dedupe_normalises() -> None:
    assert prompts.prompt_id("What is  2+2?") == prompts.prompt_id("what is 2+2? ")
    assert re.fullmatch(r"[0-9a-f]{16}", prompts.prompt_id("x"))


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def config(path: Path | None, source: str = "jsonl", **overrides) -> PromptsConfig:
    values = dict(source=source, path=str(path) if path else None, seed=0, router_size=2, eval_size=1,
                  fields={"prompt": "question", "reference": "answer"})
    values.update(overrides)
    return PromptsConfig(**values)


def test_jsonl_dedupe_and_seeded_splits(tmp_path: Path) -> None:
    rows = [{"question": f"Q{i}?", "answer": i} for i in range(6)] + [{"question": "q0? ", "answer": 0}]
    write_jsonl(tmp_path / "p.jsonl", rows)
    built = prompts.build(config(tmp_path / "p.jsonl"))
    assert len(built) == 6
    assert [r["split"] for r in built].count("router") == 2 and [r["split"] for r in built].count("eval") == 1
    assert built == prompts.build(config(tmp_path / "p.jsonl"))
    assert built != prompts.build(config(tmp_path / "p.jsonl", seed=1))
    assert {r["reference"] for r in built} == {str(i) for i in range(6)}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"question": "a", "answer": 1}\n{"question": "b", "answer": \n', "p.jsonl: line 2: not valid JSON"),
        (b'{"question": "a", "answer": 1}\n{"answer": 2}\n', "p.jsonl: line 2: field 'question': missing"),
        (b'{"question": "   ", "answer": 1}\n', "p.jsonl: line 1: field 'question': empty"),
        (b'{"question": "a"}\n{"question": "\xff\xfe"}\n', "p.jsonl: line 2: not valid UTF-8"),
        (b'[1, 2]\n', "p.jsonl: line 1: expected a JSON object"),
        (b'{"question": ["a"]}\n', "p.jsonl: line 1: field 'question': expected text"),
    ],
)
def test_bad_jsonl_names_file_line_and_field(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "p.jsonl").write_bytes(content)
    with pytest.raises(PersynError) as caught:
        prompts.build(config(tmp_path / "p.jsonl"))
    assert message in str(caught.value)


def test_missing_file_and_too_few_prompts(tmp_path: Path) -> None:
    with pytest.raises(PersynError, match="nope.jsonl: file not found"):
        prompts.build(config(tmp_path / "nope.jsonl"))
    write_jsonl(tmp_path / "p.jsonl", [{"question": "a", "answer": 1}, {"question": "b", "answer": 1}])
    with pytest.raises(PersynError, match="2 distinct prompts"):
        prompts.build(config(tmp_path / "p.jsonl"))


def test_parquet_source_and_its_errors(tmp_path: Path) -> None:
    pl.DataFrame({"question": [f"q{i}" for i in range(5)], "answer": ["1"] * 5}).write_parquet(tmp_path / "p.parquet")
    assert len(prompts.build(config(tmp_path / "p.parquet", source="parquet"))) == 5
    pl.DataFrame({"question": ["a", None, "c", "d", "e"]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(PersynError, match="bad.parquet: record 1: field 'question': missing"):
        prompts.build(config(tmp_path / "bad.parquet", source="parquet"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(PersynError, match="junk.parquet: not a readable parquet file"):
        prompts.build(config(tmp_path / "junk.parquet", source="parquet"))


def test_hf_datasets_source(tmp_path: Path) -> None:
    folder = tmp_path / "hfdata"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"question": f"hf q{i}", "answer": str(i)} for i in range(5)])
    built = prompts.build(config(None, source="hf", hf={"name": str(folder), "split": "train"}))
    assert sorted(r["reference"] for r in built) == ["0", "1", "2", "3", "4"]
    with pytest.raises(PersynError, match="cannot load split 'test'"):
        prompts.build(config(None, source="hf", hf={"name": str(folder), "split": "test"}))


def test_builtin_source() -> None:
    built = prompts.build(PromptsConfig(source="builtin:arithmetic", count=40, seed=3, router_size=8, eval_size=4))
    assert len(built) <= 40 and sum(r["split"] == "pool" for r in built) == len(built) - 12


def test_several_prompt_fields_are_joined(tmp_path: Path) -> None:
    """Alpaca-style rows: the instruction, then the input where there is one."""
    source = tmp_path / "alpaca.jsonl"
    write_jsonl(source, [{"instruction": f"Task {i}.", "input": "" if i % 2 else f"Text {i}.", "answer": str(i)}
                         for i in range(6)])
    records = prompts.build(config(source, fields={"prompt": ["instruction", "input"], "reference": "answer"}))
    texts = {r["reference"]: r["messages"][0]["content"] for r in records}
    assert texts["0"] == "Task 0.\n\nText 0." and texts["1"] == "Task 1."
    write_jsonl(source, [{"input": "only input"}] * 4)
    with pytest.raises(PersynError, match="alpaca.jsonl: line 1: field 'instruction': missing"):
        prompts.build(config(source, fields={"prompt": ["instruction", "input"]}))


def test_math_needs_every_reference_at_prompts_time(tmp_path: Path) -> None:
    """quality.kind = "math" checks answers against references: a missing one stops the prompts stage,
    before any teacher answers, naming the file, the line and the field."""
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(5)]
    rows.insert(3, {"question": "No reference here?"})
    write_jsonl(tmp_path / "p.jsonl", rows)
    assert len(prompts.build(config(tmp_path / "p.jsonl"))) == 6  # reward-model data needs no reference
    with pytest.raises(PersynError) as caught:
        prompts.build(config(tmp_path / "p.jsonl"), require_reference=True)
    assert "p.jsonl: line 4: field 'answer': missing, and quality.kind = 'math'" in str(caught.value)


def test_duplicates_with_different_references_name_both_lines(tmp_path: Path) -> None:
    rows = [{"question": f"Q{i}?", "answer": str(i)} for i in range(5)]
    rows += [{"question": "q1?  ", "answer": "1"}, {"question": "Q2 ?", "answer": "2"}, {"question": "q3?", "answer": "30"}]
    write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PersynError) as caught:
        prompts.build(config(tmp_path / "p.jsonl"))
    assert "p.jsonl: line 4 and line 8: field 'answer': the same prompt" in str(caught.value)
    assert "'3' against '30'" in str(caught.value)
    write_jsonl(tmp_path / "p.jsonl", rows[:-1])  # duplicates that agree are merged, as before
    assert len(prompts.build(config(tmp_path / "p.jsonl"))) == 6


@pytest.mark.parametrize("field", ["question", "context"])
def test_a_non_text_prompt_field_is_refused(tmp_path: Path, field: str) -> None:
    rows = [{"question": f"Q{i}?", "context": "c", "answer": str(i)} for i in range(5)] + [{"question": "x", field: 5}]
    write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PersynError) as caught:
        prompts.build(config(tmp_path / "p.jsonl", fields={"prompt": ["question", "context"], "reference": "answer"}))
    assert f"p.jsonl: line 6: field '{field}': expected text, got int" in str(caught.value)


def test_persyn_check_reads_the_prompt_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from persyn import cli

    root = Path(__file__).resolve().parents[1]
    write_jsonl(tmp_path / "p.jsonl", [{"question": f"Q{i}?", "answer": str(i)} for i in range(50)] + [{"question": "?"}])
    text = (root / "params.toml").read_text().replace('source = "builtin:arithmetic"', 'source = "jsonl"\npath = '
                                                      f'"{tmp_path / "p.jsonl"}"\nfields = {{ prompt = "question", '
                                                      'reference = "answer" }')
    (tmp_path / "params.toml").write_text(text.replace("count = 160", "count = 0"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--params", str(tmp_path / "params.toml"), "check"])
    assert stopped.value.code == 2
    assert "p.jsonl: line 51: field 'answer': missing, and quality.kind = 'math'" in capsys.readouterr().err
