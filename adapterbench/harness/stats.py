"""Statistics over per-sample records: bootstrap standard errors for corpus-level metrics (BLEU, perplexity, F1)
that lm-eval reports without one."""

from __future__ import annotations

import random
import statistics
from typing import Callable, Sequence

BOOTSTRAP_ITERS = 200  # lm-eval itself bootstraps BLEU with 100; 200 keeps the stderr's own error near 5 %


def bootstrap_stderr(items: Sequence, aggregate: Callable[[list], float], *, iters: int = BOOTSTRAP_ITERS,
                     seed: int = 1234) -> float | None:
    """Standard deviation of `aggregate` over resamples of `items` with replacement (seeded: reproducible)."""
    if len(items) < 2:
        return None
    rng = random.Random(seed)
    values = [aggregate(rng.choices(items, k=len(items))) for _ in range(iters)]
    return statistics.stdev(values)
