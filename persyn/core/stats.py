"""Confidence intervals, paired tests and power for comparing routing strategies.

Each strategy is evaluated as a (seeds × prompts) matrix of per-prompt scores: 1/0 correctness for
math, or a reward. Every strategy uses the same eval prompts and the same seeds, so two strategies
are compared cell by cell (a paired design): the prompt-to-prompt difficulty, which dominates the
variance of an accuracy, cancels out of the difference.

- `mean_ci`: the mean with a 95% interval from a two-level (clustered) bootstrap that resamples
  prompts and, independently, seeds; both are random draws from what a user cares about (the
  population of problems, and the training noise), so both belong in the interval. Resampling
  both factors of a crossed design counts the seed × prompt noise up to three times (Owen 2007,
  "the pigeonhole bootstrap"): the interval is conservative, never too narrow.
- `paired`: the mean difference with the same bootstrap on the difference matrix, and a p-value
  from an exact sign-flip permutation test over prompts.
- `mde` / `prompts_needed`: the normal-approximation power calculation for that paired design.
- `wilson`: one build's accuracy on one eval split (one seed, 0/1 scores) with its Wilson score
  interval, which keeps its coverage at small n and near 0 or 1, where p ± 1.96·se does not.

Routing strategies compared over independent draws (each draw a fresh sample of whatever the
strategy depends on, typically 5) give one (draws × prompts) matrix per arm, paired by draw index
and by prompt. There the draw is the unit of inference: prompts repeat in every draw, so only the
draws are independent replicates of the comparison.

- `hierarchical_ci`: the mean with the same two-level bootstrap as `mean_ci`, draws as rows.
- `compare_draws`: a − b with that interval, a paired t-test and a TOST equivalence test over the
  per-draw mean differences (df = draws − 1), and the t-based MDE those draws give.
- `holm`: Holm–Bonferroni adjusted p-values for a family of comparisons.
- `verdict`: better / worse / equivalent / inconclusive from a comparison and its adjusted p.

Knows nothing of DVC: the bench reads experiments and hands matrices to these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

RESAMPLES = 10_000
CHUNK = 1_000  # bootstrap draws per vectorised batch: bounds memory at CHUNK × prompts
MONTE_CARLO = 100_000  # sign flips drawn when the differences are not integers (rewards)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """Mean difference a − b with its interval, and the two-sided sign-flip p-value."""

    difference: Interval
    p_value: float
    method: str  # "exact" (integer differences, enumerated) or "monte-carlo" (rewards)
    discordant: int  # prompts whose seed-summed difference is not zero


def as_matrix(scores: np.ndarray | list) -> np.ndarray:
    """A (seeds × prompts) float matrix; a flat vector is one seed."""
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty (seeds × prompts) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("scores must be finite")
    return matrix


def bootstrap_means(matrix: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `resamples` two-level bootstrap draws: seeds and prompts are each drawn with
    replacement, and the draw's mean is over every (drawn seed, drawn prompt) cell.

    A draw's mean is w·M·v / (k·n) with w, v the multinomial counts of each seed and prompt, so no
    resampled matrix is ever built."""
    seeds, prompts = matrix.shape
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        w = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=size)
        v = rng.multinomial(prompts, np.full(prompts, 1 / prompts), size=size)
        out[start:start + size] = np.einsum("bs,sp,bp->b", w, matrix, v) / (seeds * prompts)
    return out


def interval(matrix: np.ndarray, resamples: int, seed: int) -> Interval:
    draws = bootstrap_means(matrix, resamples, seed)
    low, high = np.quantile(draws, [0.025, 0.975])
    # a constant matrix gives identical draws: keep the interval exactly on the estimate
    estimate = float(matrix.mean())
    return Interval(estimate, min(float(low), estimate), max(float(high), estimate))


def mean_ci(scores: np.ndarray | list, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Mean score with a 95% two-level bootstrap interval over prompts and seeds (seeded: same
    input and seed, same interval)."""
    return interval(as_matrix(scores), resamples, seed)


def sign_flip_p(sums: np.ndarray, seed: int = 0) -> tuple[float, str]:
    """Two-sided p of the total of `sums` (one per prompt) under random signs.

    Under H0 the two strategies are exchangeable on each prompt, so each prompt's difference is as
    likely to carry either sign. Integer sums (correctness summed over seeds) have an exact null
    distribution by convolution over the possible totals; rewards fall back to seeded Monte Carlo."""
    observed = abs(float(sums.sum()))
    if np.allclose(sums, np.round(sums)):
        values = np.abs(np.round(sums)).astype(np.int64)
        values = values[values > 0]
        total = int(values.sum())
        probability = np.zeros(2 * total + 1)  # index t + total holds P(sum = t)
        probability[total] = 1.0
        for value in values:
            probability = 0.5 * (np.roll(probability, value) + np.roll(probability, -value))
        totals = np.arange(-total, total + 1)
        p = float(probability[np.abs(totals) >= round(observed)].sum())
        return min(1.0, p), "exact"
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, MONTE_CARLO, CHUNK):
        size = min(CHUNK, MONTE_CARLO - start)
        signs = rng.choice([-1.0, 1.0], size=(size, len(sums)))
        hits += int((np.abs(signs @ sums) >= observed - 1e-12).sum())
    return (hits + 1) / (MONTE_CARLO + 1), "monte-carlo"


def paired(a: np.ndarray | list, b: np.ndarray | list, resamples: int = RESAMPLES, seed: int = 0) -> Paired:
    """Difference a − b of two strategies scored on the same prompts (columns) and seeds (rows).

    The interval bootstraps the difference matrix two-level, like `mean_ci`. The p-value is an
    exact sign-flip test over prompts on each prompt's seed-summed difference: exact (no Monte
    Carlo error, no normal approximation, valid for any number of prompts) and assumption-light;
    it conditions on the trained students, whose seed-to-seed spread the interval carries."""
    left, right = as_matrix(a), as_matrix(b)
    if left.shape != right.shape:
        raise ValueError(f"paired scores need the same (seeds × prompts) shape, got {left.shape} and {right.shape}")
    difference = left - right
    sums = difference.sum(axis=0)
    p, method = sign_flip_p(sums, seed)
    return Paired(interval(difference, resamples, seed), p, method, int((~np.isclose(sums, 0)).sum()))


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """successes / trials with its Wilson score interval (Wilson 1927): the p whose score test at
    this level does not reject, (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 ≤ successes ≤ trials and trials ≥ 1, got {successes} of {trials}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / trials
    shrink = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / shrink
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / shrink
    # at 0 or n successes one end is exactly the estimate; clip the rounding that says otherwise
    return Interval(share, max(0.0, min(share, centre - half)), min(1.0, max(share, centre + half)))


@dataclass(frozen=True)
class Design:
    """What the power of a paired comparison depends on, estimated from a pilot or assumed.

    sd: standard deviation of one (seed, prompt) difference within a seed; for 0/1 scores
        sqrt(q − δ²) with q the share of discordant pairs (one right, one wrong).
    rho: correlation of one prompt's difference between two seeds (1: a seed adds nothing new about
         the prompt; 0: independent replicates).
    seed_sd: standard deviation across seeds of the whole-eval-set difference beyond prompt noise
             (training noise that no number of prompts averages away)."""

    sd: float
    rho: float = 0.0
    seed_sd: float = 0.0


def discordance_sd(discordance: float, difference: float = 0.0) -> float:
    """sd of a 0/1 paired difference with `discordance` pairs disagreeing and mean `difference`."""
    if not 0 <= abs(difference) <= discordance <= 1:
        raise ValueError("need |difference| ≤ discordance ≤ 1")
    return math.sqrt(discordance - difference ** 2)


def standard_error(design: Design, prompts: int, seeds: int) -> float:
    """se of the mean difference: the prompt part shrinks by the design effect 1 + (k − 1)ρ over
    k·n cells; the seed part only by k."""
    prompt_part = design.sd ** 2 * (1 + (seeds - 1) * design.rho) / (seeds * prompts)
    return math.sqrt(prompt_part + design.seed_sd ** 2 / seeds)


def z_total(alpha: float, power: float) -> float:
    """z_{1−α/2} + z_{power}: how many standard errors a detectable effect must span."""
    normal = NormalDist()
    return normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)


def mde(design: Design, prompts: int, seeds: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-α test detects with probability `power`."""
    return z_total(alpha, power) * standard_error(design, prompts, seeds)


def prompts_needed(design: Design, difference: float, seeds: int, alpha: float = 0.05, power: float = 0.8) -> int:
    """Eval prompts for `difference` to be detectable; ValueError when seed noise alone forbids it."""
    budget = (difference / z_total(alpha, power)) ** 2 - design.seed_sd ** 2 / seeds
    if budget <= 0:
        raise ValueError(f"seed_sd {design.seed_sd} with {seeds} seeds leaves no room for a {difference} effect: add seeds")
    return math.ceil(design.sd ** 2 * (1 + (seeds - 1) * design.rho) / (seeds * budget) - 1e-9)


def estimate_design(a: np.ndarray | list, b: np.ndarray | list) -> Design:
    """Design parameters from an observed pair (a pilot run), for the MDE of the next one."""
    difference = as_matrix(a) - as_matrix(b)
    seeds, prompts = difference.shape
    if prompts < 2:
        raise ValueError("estimating a design needs at least 2 prompts")
    centred = difference - difference.mean(axis=1, keepdims=True)  # seed-level shifts removed
    sd = float(np.sqrt((centred ** 2).sum(axis=1).mean() / (prompts - 1)))
    if seeds == 1 or sd == 0:
        return Design(sd)
    covariance = np.mean([(centred[i] * centred[j]).sum() / (prompts - 1) for i in range(seeds) for j in range(i + 1, seeds)])
    rho = min(1.0, max(0.0, float(covariance) / sd ** 2))
    # the spread of per-seed means beyond what the unshared prompt noise (1 − ρ)·sd²/n explains
    excess = difference.mean(axis=1).var(ddof=1) - sd ** 2 * (1 - rho) / prompts
    return Design(sd, rho, float(np.sqrt(max(0.0, excess))))


def hierarchical_ci(scores: np.ndarray | list, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Mean of a (draws × prompts) matrix with a 95% hierarchical bootstrap interval.

    Each replicate draws the draws (rows) with replacement, then one resample of the prompt
    indices applied to every drawn row (prompts are crossed with draws, not nested in them), and
    takes the mean. That is exactly `mean_ci`'s two-level bootstrap, so this is `mean_ci` under
    the name the draw comparisons use; between-draw variance widens the interval."""
    return mean_ci(scores, resamples, seed)


@dataclass(frozen=True)
class DrawComparison:
    """Arm a − arm b over independent draws (paired by draw index and by prompt).

    difference: mean of the a − b matrix with its hierarchical bootstrap interval.
    per_draw: each draw's mean difference, the units the tests below are over.
    p_value: two-sided paired t-test of the per-draw differences against 0 (df = draws − 1).
    tost_p: TOST equivalence p, the larger of the one-sided t-tests against −margin and +margin.
    mde: smallest true difference a two-sided level-α t-test over this many draws detects with
         the requested power, given the observed between-draw sd."""

    difference: Interval
    per_draw: tuple[float, ...]
    p_value: float
    tost_p: float
    margin: float
    mde: float
    draws: int


def draw_mde(sd: float, draws: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """(t_{1−α/2,df} + t_{power,df})·sd/√n with n = draws and df = n − 1: the t analogue of `mde`
    for a one-sample test over a handful of draws, where the normal quantiles would be too small."""
    if draws < 2:
        raise ValueError(f"an MDE over draws needs at least 2 draws, got {draws}")
    from scipy.stats import t as student

    df = draws - 1
    return float((student.ppf(1 - alpha / 2, df) + student.ppf(power, df)) * sd / math.sqrt(draws))


def compare_draws(a: np.ndarray | list, b: np.ndarray | list, margin: float, alpha: float = 0.05,
                  power: float = 0.8, resamples: int = RESAMPLES, seed: int = 0) -> DrawComparison:
    """Compare arm a with arm b, each a (draws × prompts) score matrix on the same draws and prompts.

    The p-values are over draws, the independent replicates: per-prompt cells within a draw share
    that draw and are not independent evidence. All per-draw differences equal (zero variance,
    where t is undefined): p is 0 if their mean is not 0, else 1, and TOST is 0 if |mean| < margin,
    else 1; the MDE is then 0."""
    left, right = as_matrix(a), as_matrix(b)
    if left.shape != right.shape:
        raise ValueError(f"compared arms need the same (draws × prompts) shape, got {left.shape} and {right.shape}")
    if not margin >= 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number ≥ 0, got {margin}")
    difference = left - right
    draws = difference.shape[0]
    if draws < 2:
        raise ValueError(f"tests over draws need at least 2 draws, got {draws}")
    per_draw = difference.mean(axis=1)
    mean = float(per_draw.mean())
    sd = float(per_draw.std(ddof=1))
    tolerance = 1e-12 * max(1.0, abs(mean))  # float noise in per-row means of an exact shift
    if sd <= tolerance:
        p = 1.0 if abs(mean) <= tolerance else 0.0
        tost = 0.0 if abs(mean) < margin else 1.0
        sd = 0.0
    else:
        from scipy.stats import t as student

        df, se = draws - 1, sd / math.sqrt(draws)
        p = float(2 * student.sf(abs(mean) / se, df))
        lower = float(student.sf((mean + margin) / se, df))  # H0: difference ≤ −margin
        upper = float(student.cdf((mean - margin) / se, df))  # H0: difference ≥ +margin
        tost = max(lower, upper)
    return DrawComparison(interval(difference, resamples, seed), tuple(float(x) for x in per_draw), p, tost,
                          float(margin), draw_mde(sd, draws, alpha, power), draws)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni step-down adjusted p-values, same keys: the i-th smallest of m is multiplied
    by m − i + 1, then made non-decreasing in that order and capped at 1. Controls the family-wise
    error of many strategy comparisons at α without Bonferroni's loss of power."""
    if any(not 0 <= p <= 1 for p in p_values.values()):
        raise ValueError(f"p-values must lie in [0, 1], got {p_values}")
    ordered = sorted(p_values, key=lambda key: p_values[key])
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, key in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p_values[key]))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}


def verdict(comparison: DrawComparison, adjusted_p: float, alpha: float = 0.05) -> str:
    """Read a comparison: "better" / "worse" when the (multiplicity-adjusted) p is below α, by the
    sign of the difference; else "equivalent" when TOST puts it within ±margin (tost_p < α, as given: not
    adjusted); else "inconclusive". A difference both significant and within the margin reads as
    its sign: it is real, if smaller than the margin calls important."""
    if adjusted_p < alpha and comparison.difference.estimate != 0:
        return "better" if comparison.difference.estimate > 0 else "worse"
    if comparison.tost_p < alpha:
        return "equivalent"
    return "inconclusive"
