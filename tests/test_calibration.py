"""Calibration of the gate's tests: under simulated nulls (both sides drawn alike, densely or with only k of n items
differing, items alone or in clusters) every metric's p-value rejects at most at alpha plus binomial Monte-Carlo
error; one seed per side under seed-to-seed noise does not (the question it answers is the checkpoints'), several
seeds per side do."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import binom

from adapterbench.harness import stats
from adapterbench.harness.compare import aggregator, paired_row

ALPHA = 0.05
SIMS = 100  # null data sets per cell; the pooled check over all cells is what has the power
ITERS = 199  # Monte-Carlo permutations: the +1 correction keeps p valid at any count
WORDS = "the a cat dog sat ran on under mat rug big small red blue fast slow".split()


def _allowed(rejections_of: int, quantile: float) -> int:
    """The most rejections a test at level ALPHA shows in `rejections_of` null runs, but for a 1 - quantile chance:
    the binomial tolerance, no looser."""
    return int(binom.ppf(quantile, rejections_of, ALPHA))


class Nulls:
    """Per-item scores of two models drawn from one distribution per item, for each metric's item type."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng = n, rng
        self.level = rng.uniform(0.1, 0.6, n)  # ROUGE-like per-item difficulty
        self.p = rng.uniform(0.2, 0.9, n)  # chance of a correct answer
        self.size = rng.integers(20, 200, n)  # words per perplexity document
        self.nll = rng.uniform(2, 5, n)
        self.gold = rng.integers(0, 3, n)
        py = random.Random(int(rng.integers(1 << 30)))
        self.refs = [" ".join(py.choices(WORDS, k=py.randint(4, 10))) for _ in range(n)]
        # a few possible outputs per item: the reference with words dropped or replaced
        self.outputs = [[" ".join(w if py.random() < 0.7 else py.choice(WORDS) for w in ref.split()
                                  if py.random() < 0.9) for _ in range(5)] for ref in self.refs]

    def draw(self, metric: str, shape: int) -> list:
        """`shape` independent draws of every item's score: a list of per-draw item lists."""
        rng, n = self.rng, self.n
        if metric == "rougeL_f1":
            return list(np.clip(self.level + rng.normal(0, 0.15, (shape, n)), 0, 1))
        if metric == "acc":
            return list((rng.random((shape, n)) < self.p).astype(float))
        if metric == "word_perplexity":
            loglik = -self.size * (self.nll + rng.normal(0, 0.3, (shape, n)))
            return [list(zip(row, self.size.astype(float))) for row in loglik]
        if metric == "bleu":
            picks = rng.integers(0, 5, (shape, n))
            return [[(self.outputs[i][j], self.refs[i]) for i, j in enumerate(row)] for row in picks]
        correct = rng.random((shape, n)) < self.p
        wrong = (self.gold + rng.integers(1, 3, (shape, n))) % 3
        pred = np.where(correct, self.gold, np.where(rng.random((shape, n)) < 0.15, -1, wrong))
        return [list(zip(self.gold.tolist(), row.tolist())) for row in pred]

    def pair(self, metric: str, k: int | None, clusters: np.ndarray | None = None) -> tuple[list, list]:
        """Two sides under the null: independent draws (k None), or the same draw but on k items, where two draws
        are assigned to the sides at random. With clusters, a cluster's shift is drawn once per side."""
        x, y = self.draw(metric, 2)
        if clusters is not None:
            shift = self.rng.normal(0, 0.15, (2, clusters.max() + 1))[:, clusters]
            x, y = (list(np.clip(np.asarray(v) + s, 0, 1)) for v, s in zip((x, y), shift))
        if k is None:
            return list(x), list(y)
        y = list(y)
        moved = set(self.rng.choice(self.n, size=k, replace=False).tolist())
        for i in range(self.n):
            if i not in moved:
                y[i] = x[i]
            elif y[i] == x[i]:  # the two draws agreed: draw again until the item differs
                while y[i] == x[i]:
                    a, b = self.draw(metric, 2)
                    x[i], y[i] = a[i], b[i]
        return list(x), y


def _p_value(metric: str, x: list, y: list, clusters=None, seed: int = 0) -> float:
    """The p-value the gate's row for this metric carries (compare.paired_row's test), without its interval."""
    if metric == "acc" and clusters is None:
        return stats.mcnemar_exact(sum(a > b for a, b in zip(x, y)), sum(a < b for a, b in zip(x, y)))
    return stats.paired_permutation(x, y, aggregator(metric, ["a", "b", "c"]), clusters=clusters, iters=ITERS,
                                    seed=seed)["p_value"]


METRICS = ("rougeL_f1", "acc", "word_perplexity", "bleu", "f1_macro", "f1_weighted")
NULLS = {"dense": None, "6 differ": 6, "20 differ": 20}


def _rejections(metric: str, n: int, k: int | None, seed: int) -> int:
    rng = np.random.default_rng(seed)
    nulls = Nulls(n, rng)
    x, y = nulls.pair(metric, k)  # the shortcut above is the row's own test (paired_row adds the interval)
    row = paired_row("t", metric, [x], [y], labels=["a", "b", "c"], iters=ITERS, seed=0)
    assert row["p_value"] == _p_value(metric, x, y, seed=0)
    return sum(_p_value(metric, *nulls.pair(metric, k), seed=s) < ALPHA for s in range(SIMS))


def test_every_metrics_test_holds_its_level_under_dense_and_sparse_nulls():
    cells = {(metric, n, name): _rejections(metric, n, k, seed=1000 * i + n)
             for i, metric in enumerate(METRICS) for n in (30, 100, 300) for name, k in NULLS.items()}
    rates = {cell: r / SIMS for cell, r in cells.items()}
    print("false-positive rates:", {f"{m}/{n}/{name}": rate for (m, n, name), rate in rates.items()},
          "pooled:", sum(cells.values()) / (len(cells) * SIMS))
    too_many = {cell: rates[cell] for cell, r in cells.items() if r > _allowed(SIMS, 0.9999)}
    assert not too_many
    for metric in METRICS:  # per metric, pooled over its 9 cells
        total = sum(r for (m, _, _), r in cells.items() if m == metric)
        assert total <= _allowed(9 * SIMS, 0.999), (metric, total / (9 * SIMS))
    assert sum(cells.values()) <= _allowed(len(cells) * SIMS, 0.999)


def test_clusters_hold_the_level_where_item_level_permutation_does_not():
    # 20 paragraphs of 5 questions; each side's score moves by paragraph: items are not independent evidence
    clusters = np.repeat(np.arange(20), 5)
    rng = np.random.default_rng(5)
    nulls = Nulls(100, rng)
    pairs = [nulls.pair("rougeL_f1", None, clusters) for _ in range(SIMS)]
    clustered = sum(_p_value("rougeL_f1", x, y, clusters=list(clusters), seed=s) < ALPHA
                    for s, (x, y) in enumerate(pairs))
    items = sum(_p_value("rougeL_f1", x, y, seed=s) < ALPHA for s, (x, y) in enumerate(pairs))
    print(f"clustered null: cluster permutation {clustered / SIMS:.3f}, item permutation {items / SIMS:.3f}")
    assert clustered <= _allowed(SIMS, 0.999)
    assert items > _allowed(SIMS, 0.999)  # the check can fail: it catches a test that ignores the clusters
