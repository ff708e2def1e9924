"""Statistics over per-sample records: bootstrap standard errors and intervals, the paired tests behind comparisons
(McNemar's exact test, the paired permutation / sign-flip test, Student's t across seeds, Holm's correction),
Newcombe's paired interval, and the minimum detectable effect of a paired design."""

from __future__ import annotations

import math
import random
import statistics
from typing import Callable, Sequence

BOOTSTRAP_ITERS = 200  # lm-eval itself bootstraps BLEU with 100; 200 keeps the stderr's own error near 5 %
PAIRED_ITERS = 2000  # a 95 % percentile interval needs its 2.5 % tails well populated: 50 resamples each
EXACT_UNITS = 14  # up to 2**14 sign patterns are enumerated (exact p); beyond that, Monte Carlo
POWER = 0.8  # the power a minimum detectable effect is quoted at
_CHUNK_CELLS = 1 << 21  # weights drawn per chunk (rows x items), so 2,000 x 100k items fits in memory


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
    statsmodels' mcnemar(table, exact=True)). It is the sign-flip test of 0/1 items, computed in closed form."""
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
    interval collapses (no discordant pairs, proportions near 0 or 1). It is not the inversion of McNemar's test:
    on a few percent of tables it excludes 0 while McNemar's p is above alpha (reports mark those rows)."""
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
                     clusters: Sequence | None = None, iters: int = PAIRED_ITERS, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Paired bootstrap interval of delta = aggregate(items_b) - aggregate(items_a), where items_a[i] and
    items_b[i] are the same item scored by two models: every resample draws units with replacement and uses them
    on both sides at once, so the per-item pairing (and what the two models share) is kept. A unit is an item, or
    with `clusters` (one key per item) every item of a cluster together, so items that are not independent
    (several questions on one paragraph) are not counted as independent evidence.

    Returns {delta, ci_low, ci_high, se, se_baseline}: the percentile interval at `confidence`, the standard
    deviation of the resampled deltas, and that of the baseline's own aggregate. No p-value: the bootstrap
    under-covers with few differing items (a handful of changed answers among 100 gave 10-13 % false alarms at
    alpha 0.05), so tests are `paired_permutation`'s.

    `aggregate` maps a list of items to a number. For speed it may carry `aggregate.batched(items)`, returning a
    function from a weight array (rows x items: how often each item counts in a row) to each row's aggregate
    (see harness.compare); otherwise each row is expanded and aggregated in Python.
    """
    import numpy as np

    _paired_length(items_a, items_b)
    resampled_a, resampled_b = _resampled(aggregate, [items_a, items_b], clusters, iters, seed)
    deltas = resampled_b - resampled_a
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    spread = (lambda values: float(values.std(ddof=1))) if len(deltas) > 1 else (lambda values: math.nan)
    return {"delta": float(aggregate(items_b) - aggregate(items_a)), "ci_low": float(low), "ci_high": float(high),
            "se": spread(deltas), "se_baseline": spread(resampled_a)}


def _resampled(aggregate: Callable[[Sequence], float], sides: Sequence[Sequence], clusters: Sequence | None,
               iters: int, seed: int) -> list:
    """Each side's aggregate over the same `iters` bootstrap resamples of units (one array per side)."""
    import numpy as np

    n = len(sides[0])
    unit_of, n_units = _units(clusters, n)
    weighers = [_weigher(aggregate, items) for items in sides]
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    out: list[list] = [[] for _ in sides]
    for start in range(0, iters, rows):
        draws = rng.integers(0, n_units, size=(min(rows, iters - start), n_units))
        counts = _row_counts(draws, n_units)[:, unit_of]
        for values, weigh in zip(out, weighers):
            values.append(weigh(counts))
    return [np.concatenate(values) for values in out]


def paired_permutation(items_a: Sequence, items_b: Sequence, aggregate: Callable[[Sequence], float], *,
                       clusters: Sequence | None = None, iters: int = PAIRED_ITERS, seed: int = 0,
                       exact_units: int = EXACT_UNITS) -> dict:
    """Two-sided paired permutation (sign-flip) test of delta = aggregate(items_b) - aggregate(items_a).

    Under "no difference" the two scores of an item are exchangeable, so swapping them (the sign of the item's
    difference, for a mean) gives an equally likely data set. Each permutation swaps the pair of a random set of
    units (items, or whole `clusters`) and recomputes both aggregates from the swapped items, so corpus metrics
    (corpus BLEU, macro F1, weighted perplexity) are permuted as what they are, not as per-item averages. Only
    units whose items differ can change the statistic: with k of them, all 2**k patterns are enumerated when
    k <= `exact_units` (p = share of patterns with |delta*| >= |delta|: exact), otherwise `iters` random ones with
    the +1 correction, p = (1 + count) / (iters + 1) (Phipson & Smyth 2010): valid for any number of draws.

    Returns {delta, p_value, method ("exact" or "monte carlo"), units_differing}.
    """
    import numpy as np

    n = _paired_length(items_a, items_b)
    unit_of, n_units = _units(clusters, n)
    differs = np.fromiter((x != y for x, y in zip(items_a, items_b)), dtype=bool, count=n)
    moving = np.flatnonzero(np.bincount(unit_of, weights=differs, minlength=n_units))
    delta = float(aggregate(items_b) - aggregate(items_a))
    k = len(moving)
    if k == 0 or not math.isfinite(delta):
        return {"delta": delta, "p_value": 1.0 if k == 0 else math.nan, "method": "exact", "units_differing": k}
    pooled = _weigher(aggregate, [*items_a, *items_b])
    column = np.full(n_units, -1)
    column[moving] = np.arange(k)
    item_column = column[unit_of]  # which moving unit each item belongs to (-1: a unit that does not differ)
    exact = k <= exact_units
    total = 2 ** k if exact else iters
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // (2 * n))
    # A permuted delta this close to the observed one counts as reaching it (sums in another order differ by ulps).
    bar = abs(delta) * (1 - 1e-9) - 1e-12
    reached = 0
    for start in range(0, total, rows):
        count = min(rows, total - start)
        if exact:
            patterns = (np.arange(start, start + count)[:, None] >> np.arange(k)) & 1
        else:
            patterns = rng.integers(0, 2, size=(count, k))
        swap = np.where(item_column >= 0, patterns[:, np.maximum(item_column, 0)], 0).astype(float)
        stay = 1.0 - swap
        permuted = pooled(np.hstack([swap, stay])) - pooled(np.hstack([stay, swap]))
        reached += int(np.count_nonzero(np.abs(permuted) >= bar))
    p_value = reached / total if exact else (1 + reached) / (iters + 1)
    return {"delta": delta, "p_value": min(1.0, p_value), "method": "exact" if exact else "monte carlo",
            "units_differing": k}


def seed_t_test(values_a: Sequence[float], values_b: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Student's two-sample t-test and interval on per-seed scores: delta = mean(values_b) - mean(values_a), with
    the pooled seed-to-seed variance (df = len(a) + len(b) - 2). Each value is one training seed's aggregate on the
    same items, so the item effects the seeds share cancel and the seed is the unit of replication: with seeds of
    one config on both sides every value is exchangeable, and the test holds its level exactly when the seed
    scores are normal (means over many items are close to it). Needs three values or more.

    Returns {delta, ci_low, ci_high, p_value, se, df}."""
    a, b = [float(v) for v in values_a], [float(v) for v in values_b]
    df = len(a) + len(b) - 2
    if not a or not b or df < 1:
        raise ValueError(f"a t-test across seeds needs at least one seed per side and three in all, got {len(a)} "
                         f"and {len(b)}")
    delta = statistics.fmean(b) - statistics.fmean(a)
    squares = sum((v - statistics.fmean(a)) ** 2 for v in a) + sum((v - statistics.fmean(b)) ** 2 for v in b)
    se = math.sqrt(squares / df * (1 / len(a) + 1 / len(b)))
    if se == 0:
        same = delta == 0
        return {"delta": delta, "ci_low": delta, "ci_high": delta, "p_value": 1.0 if same else 0.0, "se": 0.0,
                "df": df}
    half = t_quantile(0.5 + confidence / 2, df) * se
    return {"delta": delta, "ci_low": delta - half, "ci_high": delta + half,
            "p_value": t_two_sided_p(delta / se, df), "se": se, "df": df}


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with an integer df, from the closed forms of Abramowitz & Stegun 26.7.3-4
    (a finite trigonometric series: no special functions needed)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:
        term, series = c, 0.0  # odd df: A = (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        for j in range(1, (df - 1) // 2 + 1):
            series += term
            term *= c * c * (2 * j) / (2 * j + 1)
        inside = 2 / math.pi * (theta + s * series) if df > 1 else 2 * theta / math.pi
    else:
        term, series = 1.0, 0.0  # even df: A = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for j in range(1, df // 2 + 1):
            series += term
            term *= c * c * (2 * j - 1) / (2 * j)
        inside = s * series
    return min(1.0, max(0.0, 1.0 - inside))


def t_quantile(q: float, df: int) -> float:
    """The q-quantile (q > 0.5) of Student's t with integer df, by bisection on t_two_sided_p."""
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > 2 * (1 - q):
        high *= 2
    for _ in range(64):  # halving from at most 2**k, 64 steps reach double precision
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided_p(mid, df) > 2 * (1 - q) else (low, mid)
    return (low + high) / 2


def minimum_detectable_effect(se: float, *, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true delta a two-sided test at `alpha` detects with probability `power`, for a delta whose
    standard error is `se` (normal approximation): (z_{1-alpha/2} + z_power) * se."""
    z = statistics.NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * se


def units_needed(se: float, n_units: int, delta: float, *, alpha: float = 0.05, power: float = POWER) -> int:
    """Units (items, or clusters) a paired design needs to detect `delta` at `alpha` with `power`, scaling the
    standard error `se` measured on `n_units` units by 1/sqrt(n)."""
    if delta <= 0:
        raise ValueError(f"the delta to detect must be > 0, got {delta}")
    return max(1, math.ceil(n_units * (minimum_detectable_effect(se, alpha=alpha, power=power) / delta) ** 2))


def _paired_length(items_a: Sequence, items_b: Sequence) -> int:
    n = len(items_a)
    if n != len(items_b):
        raise ValueError(f"paired samples differ in length: {n} vs {len(items_b)}")
    if n == 0:
        raise ValueError("no items to compare")
    return n


def _units(clusters: Sequence | None, n: int):
    """(unit index of each item, number of units): each item its own unit, or one unit per cluster key; an item
    whose key is None is a cluster of its own."""
    import numpy as np

    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster keys for {n} items")
    index: dict = {}
    unit_of = [index.setdefault(("item", i) if key is None else ("key", key), len(index))
               for i, key in enumerate(clusters)]
    return np.asarray(unit_of), len(index)


def _row_counts(draws, n_units: int):
    """How often each unit was drawn in each row of `draws` (rows x draws of unit indices)."""
    import numpy as np

    offsets = draws + n_units * np.arange(len(draws))[:, None]
    return np.bincount(offsets.ravel(), minlength=n_units * len(draws)).reshape(len(draws), n_units).astype(float)


def _weigher(aggregate: Callable[[Sequence], float], items: Sequence) -> Callable:
    import numpy as np

    batched = getattr(aggregate, "batched", None)
    if batched is not None:
        return batched(items)
    return lambda weights: np.array([aggregate([item for item, w in zip(items, row) for _ in range(int(w))])
                                     for row in weights], dtype=float)
