"""The premise table on a planted S with hand-known answers."""

import numpy as np
import pytest

from persyn.science import premise
from persyn.core.errors import PersynError

TEACHERS = ["a", "b"]


def planted() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Family x: a right on 4 of 4, b on 1; family y: a right on 1 of 4, b on 3. Learnability of the
    right answers differs by 0.5 where both are right (x0 and y0)."""
    families = ["x"] * 4 + ["y"] * 4
    quality = np.array([[1, 1], [1, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 1], [0, 0]], dtype=float)
    learn = np.array([[-1.0, -1.5], [-1, -2], [-1, -2], [-1, -2], [-2.0, -1.5], [-1, -2], [-1, -2], [-1, -2]])
    return families, quality, learn


def test_planted_premise_has_the_hand_computed_numbers() -> None:
    table = premise.premise(*planted(), TEACHERS)
    assert table["accuracy"] == {"a": 5 / 8, "b": 4 / 8}
    assert table["best_single"] == "a"
    assert table["oracle_accuracy"] == 7 / 8
    assert table["headroom"]["points"] == pytest.approx(2 / 8)
    assert table["headroom"]["low"] <= 2 / 8 <= table["headroom"]["high"]
    assert table["family_oracle_accuracy"] == 7 / 8  # a on x (4/4), b on y (3/4)
    assert table["families"]["x"]["best"] == "a" and table["families"]["y"]["best"] == "b"
    assert table["families"]["y"]["margin"] == pytest.approx(0.5)
    assert table["disagree_share"] == 5 / 8 and table["all_wrong_share"] == 1 / 8
    assert table["learnability_spread"] == {"prompts": 2, "mean": 0.5, "median": 0.5}
    assert table["best_on_some_family"] == ["a", "b"] and table["holds"]
    assert table["full_credit"]["headroom"]["points"] == pytest.approx(2 / 8)  # planted scores are 0/1


def test_partial_credit_counts_in_the_headroom_but_not_as_right() -> None:
    families, quality, learn = planted()
    quality[7] = [0.5, 0.0]  # the all-wrong prompt gets half credit from a
    table = premise.premise(families, quality, learn, TEACHERS)
    assert table["headroom"]["points"] == pytest.approx(2 / 8)
    assert table["accuracy"]["a"] == pytest.approx(5.5 / 8) and table["full_credit"]["accuracy"]["a"] == 5 / 8
    assert table["all_wrong_share"] == 1 / 8
    text = premise.markdown(table)
    assert "headroom **25.0 points**" in text and "**holds**" in text and "some teachers right and some not on 62%" in text


def test_one_teacher_best_everywhere_does_not_hold() -> None:
    families, quality, learn = planted()
    quality[:, 1] = 0
    table = premise.premise(families, quality, learn, TEACHERS)
    assert table["best_on_some_family"] == ["a"] and not table["holds"]
    assert table["learnability_spread"]["prompts"] == 0
    assert "no prompt has two right answers" in premise.markdown(table)


def test_matrices_keep_prompts_every_teacher_answered() -> None:
    prompts = [{"id": f"{i}", "family": "x" if i < 2 else None} for i in range(3)]
    scores = [{"id": f"{i}", "teacher": t, "quality": 1.0, "learnability": -1.0} for i in range(3) for t in TEACHERS]
    ids, families, quality, _ = premise.matrices(prompts, scores[:-1], TEACHERS, "data/scores/s")
    assert ids == ["0", "1"] and families == ["x", "x"] and quality.shape == (2, 2)
    with pytest.raises(PersynError, match="record 9: field 'id': not in the prompts"):
        premise.matrices(prompts, scores + [{"id": "9", "teacher": "a", "quality": 0, "learnability": 0}], TEACHERS, "s")
