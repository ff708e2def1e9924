"""The paired statistics against statsmodels/scipy references, and the vectorised BLEU against sacrebleu."""

import random

import numpy as np
import pytest

from adapterbench.harness.stats import holm, mcnemar_exact, newcombe_paired_interval, paired_bootstrap, wilson_interval
from adapterbench.tasks.metrics import bleu_corpus, bleu_from_statistics, bleu_statistics


def test_mcnemar_exact_equals_statsmodels_and_scipy_binomtest():
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    from scipy.stats import binomtest

    for b in range(0, 41):
        for c in range(0, 41):
            ours = mcnemar_exact(b, c)
            assert ours == pytest.approx(contingency.mcnemar([[7, b], [c, 3]], exact=True).pvalue, abs=1e-12)
            if b + c:
                assert ours == pytest.approx(binomtest(b, b + c, 0.5).pvalue, abs=1e-12)
    assert mcnemar_exact(1200, 1320) == pytest.approx(
        contingency.mcnemar([[0, 1200], [1320, 0]], exact=True).pvalue, rel=1e-9)


def test_mcnemar_exact_is_one_without_discordant_pairs_and_refuses_negative_counts():
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_holm_equals_statsmodels_multipletests_including_ties():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 13):
        p = rng.uniform(0, 0.3, m)
        p[m // 2] = p[0]  # a tie
        np.testing.assert_allclose(holm(list(p)), multitest.multipletests(p, method="holm")[1], atol=1e-15)
    assert holm([]) == []


def test_wilson_interval_equals_statsmodels():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for x, n in ((0, 10), (7, 20), (20, 20), (3, 161)):
        assert wilson_interval(x, n, confidence=0.9) == pytest.approx(
            proportion.proportion_confint(x, n, alpha=0.1, method="wilson"), abs=1e-12)


def test_newcombe_paired_interval_matches_published_example():
    # The R package contingencytables (companion to Fagerland, Lydersen & Laake 2017, ch. 8) tests its Newcombe
    # square-and-add paired interval on Cavo et al. (2012), table [[59, 6], [16, 80]]: -0.0621 (-0.1186 to -0.0046)
    low, high = newcombe_paired_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    low, high = newcombe_paired_interval(30, 0, 0, 5)  # no discordant pairs: still an interval, around 0
    assert low < 0 < high


def test_paired_bootstrap_of_identical_sides_is_a_zero_delta_with_p_one():
    x = list(np.random.default_rng(1).normal(size=200))
    result = paired_bootstrap(x, x, np.mean, iters=300)
    assert result == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_finds_a_shift_and_its_interval_contains_it():
    rng = np.random.default_rng(2)
    a = rng.normal(size=150)
    b = a + 0.2 + rng.normal(scale=0.3, size=150)
    result = paired_bootstrap(list(a), list(b), np.mean, iters=1000)
    assert result["delta"] == pytest.approx(float(np.mean(b) - np.mean(a)))
    assert result["ci_low"] < result["delta"] < result["ci_high"]
    assert 0 < result["ci_low"]  # the interval excludes 0, and the p-value agrees with it
    assert result["p_value"] == pytest.approx(2 / 1001)


def test_paired_bootstrap_pairs_items_so_shared_noise_cancels():
    # Item difficulty varies hugely but the second model is better on every item by the same small margin: only a
    # paired resample (same indices on both sides) sees that; an unpaired one would drown it in the variance.
    rng = np.random.default_rng(3)
    a = rng.normal(scale=10, size=100)
    result = paired_bootstrap(list(a), list(a + 0.05), np.mean, iters=500)
    assert result["ci_low"] == pytest.approx(0.05) and result["ci_high"] == pytest.approx(0.05)


def test_paired_bootstrap_is_deterministic_per_seed_and_p_reflects_noise():
    rng = np.random.default_rng(4)
    a, b = list(rng.normal(size=60)), list(rng.normal(size=60))
    first = paired_bootstrap(a, b, np.mean, iters=400, seed=7)
    assert paired_bootstrap(a, b, np.mean, iters=400, seed=7) == first
    assert paired_bootstrap(a, b, np.mean, iters=400, seed=8) != first
    assert first["p_value"] > 0.05 or first["ci_low"] > 0 or first["ci_high"] < 0  # p and interval agree


def test_paired_bootstrap_uses_a_batched_aggregate_when_given():
    calls = []

    def mean(items):
        return float(np.mean(items))

    def batched(items):
        values = np.asarray(items, dtype=float)
        calls.append(len(items))
        return lambda idx: values[idx].mean(axis=1)

    mean.batched = batched
    x = list(np.arange(50.0))
    y = [v + (i % 3) for i, v in enumerate(x)]
    fast = paired_bootstrap(x, y, mean, iters=200, seed=3)
    slow = paired_bootstrap(x, y, lambda items: float(np.mean(items)), iters=200, seed=3)
    assert calls == [50, 50]
    assert fast == pytest.approx(slow)


def test_paired_bootstrap_p_never_beats_an_exact_test_on_few_items():
    # Three items, all better: every resample agrees, but three sign flips cannot give p below 2 / 2**3.
    assert paired_bootstrap([0.1, 0.2, 0.3], [0.5, 0.6, 0.7], np.mean, iters=500)["p_value"] == 0.25
    assert paired_bootstrap([0.1], [0.9], np.mean, iters=500)["p_value"] == 1.0


def test_paired_bootstrap_refuses_unpaired_input():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0], np.mean)


def _sentences(rng, n):
    words = "the cat sat on a mat dog ran fast slow big red".split()
    return [(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))),
             " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))) for _ in range(n)]


def test_bleu_from_statistics_equals_bleu_corpus_on_subsets():
    rng = random.Random(0)
    items = _sentences(rng, 200) + [("", "an empty answer"), ("one", "one"), ("a b", "a b c d e")]
    table = bleu_statistics(items)
    subsets = [[rng.randrange(len(items)) for _ in range(rng.randint(1, 8))] for _ in range(300)]
    subsets += [list(range(len(items))), [200], [201], [202], [201, 202]]
    for subset in subsets:
        expected = bleu_corpus([items[i] for i in subset])
        assert float(bleu_from_statistics(table[subset].sum(axis=0))) == pytest.approx(expected, abs=1e-9)


def test_bleu_from_statistics_scores_many_resamples_at_once_and_fast():
    import time

    rng = random.Random(1)
    items = _sentences(rng, 500)
    table = bleu_statistics(items)
    idx = np.random.default_rng(0).integers(0, 500, size=(2000, 500))
    start = time.perf_counter()
    scores = bleu_from_statistics(table[idx].sum(axis=1))
    assert time.perf_counter() - start < 2.0  # ~0.05 s here; the loop over bleu_corpus takes minutes
    assert scores.shape == (2000,)
    assert scores[17] == pytest.approx(bleu_corpus([items[i] for i in idx[17]]), abs=1e-9)
