"""Statistics over per-sample records: bootstrap standard errors for corpus-level metrics, and the paired tests behind
comparisons (McNemar's exact test, the paired bootstrap, Newcombe's paired interval, Holm's correction)."""

from __future__ import annotations

import math
import random
import statistics
from typing import Callable, Sequence

BOOTSTRAP_ITERS = 200  # lm-eval itself bootstraps BLEU with 100; 200 keeps the stderr's own error near 5 %
PAIRED_ITERS = 2000  # a 95 % percentile interval needs its 2.5 % tails well populated: 50 resamples each
_CHUNK_CELLS = 1 << 21  # resampled indices drawn per chunk (iters x items), so 2,000 x 100k items fits in memory


def bootstrap_stderr(items: Sequence, aggregate: Callable[[list], float], *, iters: int = BOOTSTRAP_ITERS,
                     seed: int = 1234) -> float | None:
    """Standard deviation of `aggregate` over resamples of `items` with replacement (seeded: reproducible)."""
    if len(items) < 2:
        return None
    rng = random.Random(seed)
    values = [aggregate(rng.choices(items, k=len(items))) for _ in range(iters)]
    if not all(math.isfinite(v) for v in values):  # statistics.stdev raises AttributeError on NaN or inf
        return math.nan
    return statistics.stdev(values)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs b and c: under no difference each discordant pair
    falls either way with probability 1/2, so p = 2 * P(Binomial(b + c, 1/2) <= min(b, c)), capped at 1 (as
    statsmodels' mcnemar(table, exact=True))."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n, k = b + c, min(b, c)
    # Exact integer arithmetic: the tail sum of binomial coefficients over 2**n, one correctly rounded division.
    term, tail = 1, 1
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2 ** n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (statsmodels' multipletests(method="holm")): the i-th
    smallest p times (m - i + 1), made monotone, capped at 1."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion."""
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return center - half, center + half


def newcombe_paired_interval(a: int, b: int, c: int, d: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998, method 10) square-and-add interval for p1 - p2 = (b - c) / n on paired binary outcomes,
    where a = both succeed, b = only the first, c = only the second, d = neither. Combines the Wilson intervals of
    the two marginal proportions with their (continuity-corrected) correlation; it stays informative where the Wald
    interval collapses (no discordant pairs, proportions near 0 or 1)."""
    n = a + b + c + d
    if n == 0:
        raise ValueError("no pairs")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence=confidence)
    l2, u2 = wilson_interval(a + c, n, confidence=confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    # Newcombe's phi: zero when a margin is empty, and shrunk by n/2 toward zero when positive.
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    estimate = p1 - p2
    low = estimate - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    high = estimate + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, low), min(1.0, high)


def paired_bootstrap(items_a: Sequence, items_b: Sequence, aggregate: Callable[[Sequence], float], *,
                     iters: int = PAIRED_ITERS, seed: int = 0, confidence: float = 0.95) -> dict:
    """Paired bootstrap of delta = aggregate(items_b) - aggregate(items_a), where items_a[i] and items_b[i] are the
    same item scored by two models: every resample draws item indices with replacement and uses them on both sides
    at once, so the per-item pairing (and what the two models share) is kept.

    Returns {delta, ci_low, ci_high, p_value}: the percentile interval at `confidence`, and the two-sided p-value
    that inverts it, p = 2 * min(share of resampled deltas <= 0, share >= 0), each share counted as
    (1 + count) / (iters + 1) so a finite number of resamples never claims p = 0 (Davison & Hinkley 1997, ch. 4).
    We use this one, rather than the shifted-null p of Berg-Kirkpatrick et al. (2012), because it agrees with the
    interval by construction: p < 1 - confidence exactly when the interval excludes 0, so a reported delta, its
    interval and its p-value never tell different stories. The p-value is floored at 2 / 2**n, the smallest that an
    exact paired test (sign flips of n items) can reach: with few items every resample can lean the same way, and
    the bootstrap alone would then claim p = 2 / (iters + 1) from, say, three items.

    `aggregate` maps a list of items to a number. For speed it may carry `aggregate.batched(items)`, returning a
    function from an index array (resamples x items) to the aggregate of each resample at once (see
    harness.compare); otherwise each resample is aggregated in Python.
    """
    import numpy as np

    n = len(items_a)
    if n != len(items_b):
        raise ValueError(f"paired samples differ in length: {n} vs {len(items_b)}")
    if n == 0:
        raise ValueError("no items to resample")
    resampled_a, resampled_b = _resampler(aggregate, items_a), _resampler(aggregate, items_b)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    deltas = []
    for start in range(0, iters, rows):
        idx = rng.integers(0, n, size=(min(rows, iters - start), n))
        deltas.append(resampled_b(idx) - resampled_a(idx))
    deltas = np.concatenate(deltas)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    below = (1 + np.count_nonzero(deltas <= 0)) / (iters + 1)
    above = (1 + np.count_nonzero(deltas >= 0)) / (iters + 1)
    p_value = max(min(1.0, 2 * min(below, above)), 2.0 ** (1 - n))
    return {"delta": float(aggregate(items_b) - aggregate(items_a)), "ci_low": float(low), "ci_high": float(high),
            "p_value": float(p_value)}


def _resampler(aggregate: Callable[[Sequence], float], items: Sequence) -> Callable:
    import numpy as np

    batched = getattr(aggregate, "batched", None)
    if batched is not None:
        return batched(items)
    return lambda idx: np.array([aggregate([items[i] for i in row]) for row in idx], dtype=float)
