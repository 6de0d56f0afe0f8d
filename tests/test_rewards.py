import pytest

from persyn.core.errors import PersynError
from persyn.sources.answers import extract_answer, is_correct, normalise_number
from persyn.pipeline.rewards import verified_quality


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("3 + 4 = 7. The answer is 7.", "7"),
        ("We get 12 and then 5.\n#### 1,234", "1234"),
        ("so \\boxed{\\frac{1}{2}}, not 5", "0.5"),
        ("\\boxed{42}. Check: 6 * 7 = 42, then 7", "42"),
        ("\\boxed{x = {3}}", "3"),
        ("The answer is: **$12.50**", "12.5"),
        ("It costs 3.0 dollars", "3"),
        ("The answer is -5 apples, not 6", "-5"),
        ("The answer is 10.\n\nThe answer is 11.", "11"),
        ("first 8, then 2 + 2 = 4", "4"),
        ("the answer is 2,000 stamps", "2000"),
        ("no number here", None),
    ],
)
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(("raw", "normal"), [("1,000", "1000"), ("$7", "7"), ("3/4", "0.75"), ("0.50", "0.5"),
                                             ("-2.0", "-2"), ("abc", None), ("1/0", None)])
def test_normalise_number(raw: str, normal: str | None) -> None:
    assert normalise_number(raw) == normal


def test_correctness_against_reference_formats() -> None:
    assert is_correct("so 8 * 3 = 24. The answer is 24.", "24") == 1.0
    assert is_correct("The answer is 24.", "He has 24 left.\n#### 24") == 1.0
    assert is_correct("The answer is 23.", "24") == 0.0
    assert is_correct("", "24") == 0.0
    with pytest.raises(PersynError, match="no number"):
        is_correct("7", "seven")


def test_missing_reference_names_the_record() -> None:
    with pytest.raises(PersynError, match="data/prompts.parquet: record abc: field 'reference': missing"):
        verified_quality(["7"], [{"id": "abc", "reference": None}], "data/prompts.parquet")
