"""The shifted eval set: enough distinct problems, deterministic, right answers, no phrasing shared
with the built-in generator, and its place in the prompts stage (split eval_shifted)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from persyn.pipeline import prompts
from persyn.sources import arithmetic, arithmetic_shifted
from persyn.params.config import PromptsConfig
from persyn.core.errors import PersynError
from persyn.core.io import write_parquet
from persyn.pipeline.prompts import prompt_id

# one hand-picked draw per template and its hand-computed answer
HAND = {
    "train": ({"speed": 60, "hours": 3}, 180),
    "temperature": ({"start": 5, "up": 10, "down": 12}, 3),
    "ages": ({"gap": 4, "later": 2, "future": 10}, 12),
    "change": ({"price": 3, "count": 4, "bill": 20}, 8),
    "recipe": ({"per": 3, "guests": 5, "spare": 2}, 17),
    "bus": ({"start": 20, "off": 5, "on": 3, "off2": 4}, 14),
    "garden": ({"rows": 4, "per": 6, "extra": 5}, 29),
    "savings": ({"weekly": 10, "weeks": 4, "spent": 15}, 25),
    "tank": ({"total": 120, "by": 8}, 15),
    "laps": ({"length": 25, "laps": 4, "more": 2}, 150),
    "teams": ({"total": 42, "by": 7}, 6),
    "score": ({"twos": 5, "threes": 2}, 16),
    "library": ({"lent": 30, "back": 12, "again": 4}, 22),
    "pizza": ({"pizzas": 3, "slices": 8, "guests": 6}, 4),
    "stairs": ({"floors": 10, "steps": 12, "target": 3}, 36),
    "minutes": ({"a": 20, "b": 15, "days": 3}, 105),
    "fence": ({"w": 10, "h": 7}, 34),
    "tickets": ({"adult": 3, "ap": 10, "child": 2, "cp": 4}, 38),
}
NAMES = set(arithmetic.NAMES) | set(arithmetic_shifted.PEOPLE)
OBJECTS = set(arithmetic.ITEMS) | set(arithmetic.CONTAINERS) | {c + "s" for c in arithmetic.CONTAINERS} | {"boxes"}


def skeleton(text: str) -> list[str]:
    """Words with numbers, people and the built-in's objects replaced by placeholders: the phrasing."""
    words = []
    for word in re.findall(r"[a-z0-9']+", text.lower()):
        base = word.removesuffix("'s")
        words.append("#" if word.isdigit() else "N" if base.capitalize() in NAMES else "I" if word in OBJECTS else word)
    return words


def four_grams(texts: list[str]) -> set[tuple[str, ...]]:
    return {tuple(w[i:i + 4]) for text in texts for w in [skeleton(text)] for i in range(len(w) - 3)}


def test_count_distinct_and_deterministic() -> None:
    problems = arithmetic_shifted.generate(600, seed=0)
    assert len(problems) == 600 and len({prompt_id(p["prompt"]) for p in problems}) == 600
    assert problems == arithmetic_shifted.generate(600, seed=0) != arithmetic_shifted.generate(600, seed=1)
    assert {t.name for t in arithmetic_shifted.TEMPLATES} == set(HAND)  # every template is checked by hand


@pytest.mark.parametrize("template", arithmetic_shifted.TEMPLATES, ids=lambda t: t.name)
def test_each_formula_on_hand_picked_numbers(template: arithmetic_shifted.Template) -> None:
    values, expected = HAND[template.name]
    text, answer = template.render(values, "Aiko", "Bruno")
    assert answer == expected
    assert all(str(v) in text for v in values.values())  # every number the answer uses is in the text


def test_references_are_whole_non_negative_numbers_from_the_drawn_values() -> None:
    """Every drawn problem's reference is its template's formula on numbers that appear in its
    text, and divisions are exact (a remainder would make the reference a lie)."""
    for seed in range(3):
        rng = random.Random(seed)
        for template in arithmetic_shifted.TEMPLATES:
            for _ in range(50):
                values = template.draw(rng)
                text, answer = template.render(values, "Aiko", "Bruno")
                assert set(re.findall(r"\d+", text)) == {str(v) for v in values.values()}, (template.name, values)
                assert isinstance(answer, int) and answer >= 0, (template.name, values)
                if template.name in ("tank", "teams"):
                    assert values["total"] % values["by"] == 0
                if template.name == "pizza":
                    assert values["pizzas"] * values["slices"] % values["guests"] == 0


def test_no_phrasing_shared_with_the_builtin_generator() -> None:
    builtin = [p["prompt"] for seed in range(3) for p in arithmetic.generate(2000, seed)]
    shifted = [p["prompt"] for p in arithmetic_shifted.generate(600, seed=0)]
    assert not four_grams(builtin) & four_grams(shifted)
    assert not {prompt_id(t) for t in builtin} & {prompt_id(t) for t in shifted}
    assert not set(arithmetic.NAMES) & set(arithmetic_shifted.PEOPLE)


def test_the_overlap_check_catches_a_builtin_phrasing() -> None:
    """The check above can fail: one built-in sentence with a shifted name is caught."""
    builtin = [p["prompt"] for p in arithmetic.generate(500, seed=0)]
    leaked = "Aiko has 7 stamps. Aiko buys 3 more. How many stamps does Aiko have now?"
    assert four_grams(builtin) & four_grams([leaked])


def builtin_config(**overrides: object) -> PromptsConfig:
    values: dict = dict(source="builtin:arithmetic", count=80, seed=0, router_size=10, eval_size=12, shifted_eval_size=40)
    values.update(overrides)
    return PromptsConfig(**values)


def test_the_prompts_stage_adds_the_shifted_split_beside_the_source() -> None:
    """prompts.shifted_eval_size problems become split eval_shifted; the source's own splits are the
    ones a build without them has, and no shifted problem shares a phrasing with the built-in ones."""
    built = prompts.build(builtin_config(), require_reference=True)
    plain = prompts.build(builtin_config(shifted_eval_size=0), require_reference=True)
    counts = {s: sum(r["split"] == s for r in built) for s in ("router", "pool", "eval", "eval_shifted")}
    assert counts == {"router": 10, "pool": 58, "eval": 12, "eval_shifted": 40}
    assert [r for r in built if r["split"] != "eval_shifted"] == plain
    assert [r["id"] for r in built] == sorted(r["id"] for r in built)  # one table, sorted by id as before
    shifted = {r["messages"][0]["content"]: r["reference"] for r in built if r["split"] == "eval_shifted"}
    assert shifted == {p["prompt"]: p["reference"] for p in arithmetic_shifted.generate(40, seed=0)}
    assert not four_grams(list(shifted)) & four_grams([r["messages"][0]["content"] for r in plain])
    assert not any(r["split"] == "eval_shifted" for r in prompts.build(builtin_config(shifted_eval_size=0)))


def test_the_shifted_split_is_the_same_bytes_every_run(tmp_path: Path) -> None:
    for name, seed in (("first", 0), ("second", 0), ("other", 1)):
        write_parquet(tmp_path / f"{name}.parquet", prompts.build(builtin_config(seed=seed)), "prompt")
    assert (tmp_path / "first.parquet").read_bytes() == (tmp_path / "second.parquet").read_bytes()
    assert (tmp_path / "first.parquet").read_bytes() != (tmp_path / "other.parquet").read_bytes()


def test_a_source_prompt_that_is_a_shifted_problem_stops_the_build(tmp_path: Path) -> None:
    """Evaluated as unseen, it would have been trained on: one error naming the source line."""
    leaked = arithmetic_shifted.generate(5, seed=0)[3]
    rows = [{"question": f"What is {i} + {i}?", "answer": 2 * i} for i in range(6)]
    rows.insert(2, {"question": leaked["prompt"].upper(), "answer": leaked["reference"]})
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = PromptsConfig(source="jsonl", path=str(tmp_path / "p.jsonl"), seed=0, router_size=2, eval_size=1,
                           shifted_eval_size=5, fields={"prompt": "question", "reference": "answer"})
    with pytest.raises(PersynError, match=r"p.jsonl: line 3: is shifted eval problem 3 .*change prompts.seed"):
        prompts.build(config)
