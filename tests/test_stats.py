"""persyn.stats on planted predictions whose intervals, p-values and power are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persyn import stats


def test_constant_scores_give_a_zero_width_interval() -> None:
    for value in (0.0, 1.0):
        result = stats.mean_ci(np.full((3, 40), value), resamples=500)
        assert (result.estimate, result.low, result.high) == (value, value, value)


def test_interval_covers_the_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    scores = (rng.random((3, 200)) < 0.3).astype(float)
    first = stats.mean_ci(scores, resamples=2000, seed=7)
    assert first == stats.mean_ci(scores, resamples=2000, seed=7)
    assert first != stats.mean_ci(scores, resamples=2000, seed=8)
    assert first.estimate == pytest.approx(scores.mean()) and first.low < first.estimate < first.high
    # independent cells: the true 95% width is 2·1.96·sqrt(p(1−p)/(k·n)); resampling seeds and prompts
    # both counts the cell noise up to three times (Owen 2007), so the interval is wider, never narrower
    exact = 2 * 1.96 * math.sqrt(0.3 * 0.7 / scores.size)
    assert 1.2 * exact < first.high - first.low < math.sqrt(3) * exact * 1.15


def test_seed_resampling_widens_the_interval() -> None:
    """Seeds that disagree as a whole (one student 0.2 better everywhere) widen the interval;
    a bootstrap over prompts alone would not see it."""
    prompts = (np.arange(100) % 2).astype(float)
    same = stats.mean_ci(np.stack([prompts, prompts]), resamples=2000)
    shifted = stats.mean_ci(np.stack([prompts * 0.8, prompts * 0.8 + 0.2]), resamples=2000)
    assert same.estimate == shifted.estimate == 0.5
    assert shifted.high - shifted.low > same.high - same.low + 0.05


def test_a_difference_on_every_pair_is_exact() -> None:
    """a right and b wrong on every prompt and seed: the interval is exactly 1 and the p-value is
    the smallest a sign-flip test over 12 prompts can give, 2 / 2^12."""
    a, b = np.ones((2, 12)), np.zeros((2, 12))
    result = stats.paired(a, b, resamples=500)
    assert (result.difference.estimate, result.difference.low, result.difference.high) == (1.0, 1.0, 1.0)
    assert result.p_value == 2 / 2 ** 12 and result.method == "exact" and result.discordant == 12
    assert stats.paired(b, a, resamples=500).p_value == result.p_value  # two-sided


def test_symmetric_discordance_gives_p_one() -> None:
    a = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 1])
    b = np.array([0, 1, 0, 1, 0, 1, 1, 0, 1, 1])
    result = stats.paired(a, b, resamples=500)
    assert result.difference.estimate == 0.0 and result.discordant == 6
    assert result.p_value == pytest.approx(1.0, abs=1e-12)


def test_exact_p_by_hand() -> None:
    """7 discordant prompts, 6 favour a: P(|sum| ≥ 5) = 2·(C(7,6) + C(7,7)) / 2^7 = 16/128; the
    prompts where both agree change nothing."""
    a = np.array([1] * 6 + [0] + [1, 0, 1])
    b = np.array([0] * 6 + [1] + [1, 0, 1])
    result = stats.paired(a, b, resamples=500)
    assert result.p_value == 16 / 128
    assert result.difference.estimate == pytest.approx(5 / 10)


def test_exact_p_counts_seed_sums() -> None:
    """Two seeds: prompt sums 2, 2, 1, −1, total 4. |total| ≥ 4 needs the first two signs equal
    (2 ways) and then holds unless the last two pull it down to 2 (3 of 4 ways): 6 of 16 patterns,
    checked against direct enumeration."""
    a = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    b = np.array([[0, 0, 0, 1], [0, 0, 0, 0]])
    sums = (a - b).sum(axis=0)
    signs = np.array(np.meshgrid(*[[-1, 1]] * 4)).reshape(4, -1).T
    expected = float((np.abs(signs @ sums) >= abs(sums.sum())).mean())
    assert expected == 6 / 16
    assert stats.paired(a, b, resamples=500).p_value == expected


def test_rewards_use_a_seeded_monte_carlo_that_agrees_with_enumeration() -> None:
    a = np.array([0.5, 1.25, 0.75, 2.0, -0.25, 0.1])
    b = np.zeros(6)
    result = stats.paired(a, b, resamples=500)
    signs = np.array(np.meshgrid(*[[-1, 1]] * 6)).reshape(6, -1).T
    exact = float((np.abs(signs @ a) >= abs(a.sum()) - 1e-12).mean())
    assert result.method == "monte-carlo" and result.p_value == pytest.approx(exact, abs=0.005)
    assert result == stats.paired(a, b, resamples=500)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="same"):
        stats.paired(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="finite"):
        stats.mean_ci([1.0, float("nan")])


def test_power_against_a_hand_computed_value() -> None:
    """30% discordant pairs, 500 prompts, one seed: (1.959964 + 0.841621) · sqrt(0.3 / 500)."""
    design = stats.Design(stats.discordance_sd(0.3))
    assert stats.mde(design, prompts=500, seeds=1) == pytest.approx(2.801585 * math.sqrt(0.3 / 500), rel=1e-6)
    assert stats.mde(design, prompts=500, seeds=1) == pytest.approx(0.068625, abs=1e-6)
    # inverse: 0.3 · (2.801585 / 0.05)² = 941.9 → 942 prompts for 5 points with one seed
    assert stats.prompts_needed(design, 0.05, seeds=1) == 942
    # three seeds that repeat half of each prompt's difference: design effect (1 + 2·0.5) / 3
    assert stats.prompts_needed(stats.Design(design.sd, rho=0.5), 0.05, seeds=3) == math.ceil(941.86 * 2 / 3)


def test_power_inverse_round_trips_and_seed_noise_can_forbid_it() -> None:
    design = stats.Design(0.5, rho=0.3, seed_sd=0.01)
    needed = stats.prompts_needed(design, 0.05, seeds=3)
    assert stats.mde(design, needed, 3) <= 0.05 < stats.mde(design, needed - 1, 3)
    with pytest.raises(ValueError, match="add seeds"):
        stats.prompts_needed(stats.Design(0.5, seed_sd=0.04), 0.05, seeds=3)


def test_design_estimated_from_planted_seeds() -> None:
    """Identical seeds: ρ = 1 and no seed noise; the sd is that of the one difference vector."""
    row = np.array([1, 0, 0, -1, 1, 0, 1, 0], dtype=float)
    design = stats.estimate_design(np.stack([row, row, row]), np.zeros((3, 8)))
    assert design.rho == pytest.approx(1.0) and design.seed_sd == 0.0
    assert design.sd == pytest.approx(row.std(ddof=1))


def test_wilson_against_closed_forms_and_a_published_interval() -> None:
    """0 of n: [0, z²/(n + z²)]; n of n: [n/(n + z²), 1]; 81 of 263: Newcombe (1998), Statistics in
    Medicine 17:857, Table I, method 3: 0.2553 to 0.3662."""
    z2 = 1.959963984540054 ** 2
    assert stats.wilson(0, 10) == stats.Interval(0.0, 0.0, pytest.approx(z2 / (10 + z2)))
    assert stats.wilson(10, 10) == stats.Interval(1.0, pytest.approx(10 / (10 + z2)), 1.0)
    published = stats.wilson(81, 263)
    assert (round(published.low, 4), round(published.high, 4)) == (0.2553, 0.3662)
    assert published.estimate == 81 / 263
    low, high = stats.wilson(3, 4), stats.wilson(1, 4)  # symmetric under swapping right and wrong
    assert (low.low, low.high) == (pytest.approx(1 - high.high), pytest.approx(1 - high.low))
    with pytest.raises(ValueError):
        stats.wilson(5, 4)
