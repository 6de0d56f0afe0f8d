"""persyn.core.stats on planted predictions whose intervals, p-values and power are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persyn.core import stats


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


# --- comparisons over independent draws (unit of inference: the draw) ---


def test_a_large_planted_difference_over_eight_draws_is_better() -> None:
    rng = np.random.default_rng(3)
    b = rng.random((8, 200)) * 0.5
    shifts = np.array([0.21, 0.19, 0.20, 0.22, 0.18, 0.20, 0.21, 0.19])  # true difference 0.2, sd 0.0131
    a = b + shifts[:, None]
    result = stats.compare_draws(a, b, margin=0.03, resamples=2000)
    assert result.draws == 8 and result.per_draw == pytest.approx(tuple(shifts))
    assert result.difference.estimate == pytest.approx(0.2) and result.difference.low > 0
    assert result.p_value < 0.01 and result.tost_p > 0.5
    assert stats.verdict(result, stats.holm({"a": result.p_value})["a"]) == "better"
    swapped = stats.compare_draws(b, a, margin=0.03, resamples=2000)
    assert swapped.p_value == pytest.approx(result.p_value) and swapped.difference.high < 0
    assert stats.verdict(swapped, swapped.p_value) == "worse"


def test_planted_equivalence_over_many_draws() -> None:
    """Zero true difference (draw offsets centred exactly), small between-draw noise, 30 draws:
    the difference sits well inside ±0.03."""
    rng = np.random.default_rng(4)
    b = 0.2 + 0.6 * rng.random((30, 100))
    offsets = rng.normal(0, 0.005, 30)
    a = b + (offsets - offsets.mean())[:, None]
    result = stats.compare_draws(a, b, margin=0.03, resamples=2000)
    assert result.difference.estimate == pytest.approx(0.0, abs=1e-12)
    assert result.p_value > 0.5 and result.tost_p < 0.05
    assert stats.verdict(result, result.p_value) == "equivalent"


def test_an_underpowered_comparison_is_inconclusive() -> None:
    """Three draws disagreeing about the sign, margin 0.01: neither test can decide."""
    b = np.full((3, 50), 0.5)
    a = b + np.array([0.05, -0.03, 0.04])[:, None]
    result = stats.compare_draws(a, b, margin=0.01, resamples=2000)
    assert result.p_value > 0.05 and result.tost_p > 0.05
    assert result.mde > abs(result.difference.estimate)
    assert stats.verdict(result, result.p_value) == "inconclusive"


def test_draw_p_value_is_the_paired_t_test_on_per_draw_means() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(5)
    a = (rng.random((5, 80)) < 0.55).astype(float)
    b = (rng.random((5, 80)) < 0.45).astype(float)
    result = stats.compare_draws(a, b, margin=0.02, resamples=500)
    assert result.p_value == pytest.approx(ttest_rel(a.mean(axis=1), b.mean(axis=1)).pvalue, rel=1e-9)
    # TOST by hand: the larger of the two one-sided p-values, each a shifted one-sample t-test
    from scipy.stats import ttest_1samp

    per_draw = a.mean(axis=1) - b.mean(axis=1)
    lower = ttest_1samp(per_draw, -0.02, alternative="greater").pvalue
    upper = ttest_1samp(per_draw, 0.02, alternative="less").pvalue
    assert result.tost_p == pytest.approx(max(lower, upper), rel=1e-9)


def test_zero_variance_draws_decide_without_nan() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shifted = stats.compare_draws(np.full((5, 20), 0.1), np.zeros((5, 20)), margin=0.03, resamples=500)
        same = stats.compare_draws(np.ones((5, 20)), np.ones((5, 20)), margin=0.03, resamples=500)
        rng = np.random.default_rng(6)
        b = rng.random((4, 30))
        noisy = stats.compare_draws(b + 0.01, b, margin=0.03, resamples=500)  # float noise only
    assert (shifted.p_value, shifted.tost_p, shifted.mde) == (0.0, 1.0, 0.0)
    assert stats.verdict(shifted, shifted.p_value) == "better"
    assert (same.p_value, same.tost_p, same.mde) == (1.0, 0.0, 0.0)
    assert stats.verdict(same, same.p_value) == "equivalent"
    assert (noisy.p_value, noisy.tost_p) == (0.0, 0.0)
    assert stats.verdict(noisy, noisy.p_value) == "better"  # significant and within margin: its sign
    with pytest.raises(ValueError, match="2 draws"):
        stats.compare_draws(np.ones(5), np.zeros(5), margin=0.03)
    with pytest.raises(ValueError, match="same"):
        stats.compare_draws(np.ones((3, 5)), np.ones((2, 5)), margin=0.03)


def test_holm_by_hand_with_the_monotone_step_and_the_cap() -> None:
    """Sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04, and b is raised to c's 0.06."""
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert list(adjusted) == ["a", "b", "c"]
    assert adjusted == {"a": pytest.approx(0.03), "b": pytest.approx(0.06), "c": pytest.approx(0.06)}
    assert stats.holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}
    assert stats.holm({"only": 0.02}) == {"only": 0.02} and stats.holm({}) == {}
    with pytest.raises(ValueError):
        stats.holm({"bad": float("nan")})


def test_draw_mde_matches_the_t_formula_and_shrinks_with_draws() -> None:
    """Per-draw differences 0.1, 0.2, 0.3: sd 0.1, t_{.975,2} = 4.302653, t_{.8,2} = 1.060660;
    the pattern twice: sd sqrt(0.04 / 5), t_{.975,5} = 2.570582, t_{.8,5} = 0.919544."""
    three = stats.compare_draws(np.array([0.1, 0.2, 0.3])[:, None] * np.ones((3, 10)), np.zeros((3, 10)),
                                margin=0.05, resamples=500)
    assert three.mde == pytest.approx((4.302653 + 1.060660) * 0.1 / math.sqrt(3), rel=1e-6)
    six = stats.compare_draws(np.array([0.1, 0.2, 0.3] * 2)[:, None] * np.ones((6, 10)), np.zeros((6, 10)),
                              margin=0.05, resamples=500)
    assert six.mde == pytest.approx((2.570582 + 0.919544) * math.sqrt(0.008) / math.sqrt(6), rel=1e-6)
    assert six.mde < three.mde
    sizes = [stats.draw_mde(0.05, n) for n in (2, 3, 5, 8, 20)]
    assert sizes == sorted(sizes, reverse=True)


def test_hierarchical_ci_widens_with_draw_variance() -> None:
    prompts = (np.arange(100) % 2).astype(float)
    identical = np.stack([prompts] * 5)
    spread = identical * 0.6 + np.array([0.0, 0.1, 0.2, 0.3, 0.4])[:, None]  # draws shifted by up to 0.4
    same = stats.hierarchical_ci(identical, resamples=2000)
    wide = stats.hierarchical_ci(spread, resamples=2000)
    assert same.estimate == pytest.approx(0.5) and wide.estimate == pytest.approx(0.5)
    assert wide.high - wide.low > same.high - same.low + 0.05
    assert same == stats.mean_ci(identical, resamples=2000)  # the same two-level bootstrap
