"""The paired statistics against statsmodels/scipy/sklearn/sacrebleu references (exact permutation p-values by brute
force), and the vectorised BLEU against sacrebleu."""

import random

import numpy as np
import pytest

from adapterbench.harness.stats import (
    holm, mcnemar_exact, minimum_detectable_effect, newcombe_paired_interval, paired_bootstrap, paired_permutation,
    seed_t_test, t_quantile, t_two_sided_p, units_needed, wilson_interval,
)
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


def test_paired_bootstrap_of_identical_sides_is_a_zero_delta_and_interval():
    x = list(np.random.default_rng(1).normal(size=200))
    result = paired_bootstrap(x, x, np.mean, iters=300)
    assert {k: result[k] for k in ("delta", "ci_low", "ci_high", "se")} == {"delta": 0.0, "ci_low": 0.0,
                                                                            "ci_high": 0.0, "se": 0.0}
    # the baseline's own standard error is the mean's, sd / sqrt(n), within resampling error
    assert result["se_baseline"] == pytest.approx(np.std(x, ddof=1) / np.sqrt(200), rel=0.15)


def test_paired_bootstrap_finds_a_shift_and_its_interval_contains_it():
    rng = np.random.default_rng(2)
    a = rng.normal(size=150)
    b = a + 0.2 + rng.normal(scale=0.3, size=150)
    result = paired_bootstrap(list(a), list(b), np.mean, iters=1000)
    assert result["delta"] == pytest.approx(float(np.mean(b) - np.mean(a)))
    assert 0 < result["ci_low"] < result["delta"] < result["ci_high"]
    # the bootstrap standard error of a mean difference is the textbook sd / sqrt(n), within resampling error
    assert result["se"] == pytest.approx(np.std(b - a, ddof=1) / np.sqrt(150), rel=0.1)


def test_paired_bootstrap_pairs_items_so_shared_noise_cancels():
    # Item difficulty varies hugely but the second model is better on every item by the same small margin: only a
    # paired resample (same indices on both sides) sees that; an unpaired one would drown it in the variance.
    rng = np.random.default_rng(3)
    a = rng.normal(scale=10, size=100)
    result = paired_bootstrap(list(a), list(a + 0.05), np.mean, iters=500)
    assert result["ci_low"] == pytest.approx(0.05) and result["ci_high"] == pytest.approx(0.05)


def test_paired_bootstrap_is_deterministic_per_seed():
    rng = np.random.default_rng(4)
    a, b = list(rng.normal(size=60)), list(rng.normal(size=60))
    first = paired_bootstrap(a, b, np.mean, iters=400, seed=7)
    assert paired_bootstrap(a, b, np.mean, iters=400, seed=7) == first
    assert paired_bootstrap(a, b, np.mean, iters=400, seed=8) != first


def test_paired_bootstrap_uses_a_batched_aggregate_when_given():
    calls = []

    def mean(items):
        return float(np.mean(items))

    def batched(items):
        values = np.asarray(items, dtype=float)
        calls.append(len(items))
        return lambda weights: weights @ values / weights.sum(axis=1)

    mean.batched = batched
    x = list(np.arange(50.0))
    y = [v + (i % 3) for i, v in enumerate(x)]
    fast = paired_bootstrap(x, y, mean, iters=200, seed=3)
    slow = paired_bootstrap(x, y, lambda items: float(np.mean(items)), iters=200, seed=3)
    assert calls == [50, 50]
    assert fast == pytest.approx(slow)


def test_cluster_bootstrap_with_singleton_clusters_is_the_item_bootstrap_and_wider_with_real_clusters():
    rng = np.random.default_rng(5)
    a = rng.normal(size=120)
    shared = np.repeat(rng.normal(scale=0.5, size=12), 10)  # 12 paragraphs of 10 questions, one shift each
    b = a + 0.1 + shared + rng.normal(scale=0.1, size=120)
    plain = paired_bootstrap(list(a), list(b), np.mean, iters=500, seed=1)
    assert paired_bootstrap(list(a), list(b), np.mean, clusters=list(range(120)), iters=500, seed=1) == plain
    clustered = paired_bootstrap(list(a), list(b), np.mean, clusters=list(np.repeat(np.arange(12), 10)), iters=500)
    # the delta's real spread is the paragraphs' (0.5 / sqrt(12) = 0.14), not the items' (0.5 / sqrt(120) = 0.046)
    assert clustered["se"] > 2 * plain["se"]
    assert clustered["se"] == pytest.approx(np.std(shared[::10], ddof=1) / np.sqrt(12), rel=0.2)


def test_paired_tests_refuse_unpaired_input():
    for function in (paired_bootstrap, paired_permutation):
        with pytest.raises(ValueError):
            function([1.0, 2.0], [1.0], np.mean)
    with pytest.raises(ValueError, match="cluster keys"):
        paired_permutation([1.0, 2.0], [1.0, 3.0], np.mean, clusters=["a"])


def test_permutation_of_a_mean_equals_scipys_exact_paired_permutation_test():
    from scipy.stats import permutation_test

    rng = np.random.default_rng(6)
    for trial in range(6):
        a = rng.normal(size=11).round(1)
        b = a + rng.normal(0.3, 1.0, size=11).round(1)
        b[:trial] = a[:trial]  # items that did not move: they cannot flip, and scipy's 2**11 patterns agree
        ours = paired_permutation(list(a), list(b), np.mean)
        theirs = permutation_test((b, a), lambda x, y: np.mean(x) - np.mean(y), permutation_type="samples",
                                  n_resamples=np.inf).pvalue
        assert ours["method"] == "exact" and ours["units_differing"] == int(np.count_nonzero(a != b))
        assert ours["p_value"] == pytest.approx(theirs, abs=1e-12)


def test_permutation_sees_only_the_items_that_differ():
    # 100 items at ROUGE-L 0.30, the candidate 0.05 lower on 4 of them: 4 sign flips can give at best p = 2/16
    base = [0.30] * 100
    cand = [0.25] * 4 + [0.30] * 96
    result = paired_permutation(base, cand, np.mean)
    assert (result["method"], result["units_differing"], result["p_value"]) == ("exact", 4, 0.125)
    assert paired_permutation(base, base, np.mean) == {"delta": 0.0, "p_value": 1.0, "method": "exact",
                                                       "units_differing": 0}


def _swapped(a, b, pattern):
    return ([y if s else x for x, y, s in zip(a, b, pattern)], [x if s else y for x, y, s in zip(a, b, pattern)])


def test_permutation_of_corpus_bleu_and_macro_f1_equals_brute_force_with_the_reference_libraries():
    import itertools

    import sacrebleu
    from sklearn.metrics import f1_score

    from adapterbench.harness.compare import aggregator

    rng = random.Random(7)
    refs = [(" ".join(rng.choice("the cat sat on a mat dog ran".split()) for _ in range(6))) for _ in range(9)]
    outs_a = [r if i % 3 else r.split(" ", 2)[-1] for i, r in enumerate(refs)]
    outs_b = [r.rsplit(" ", 1)[0] if i < 6 else outs_a[i] for i, r in enumerate(refs)]  # 6 items differ
    a, b = list(zip(outs_a, refs)), list(zip(outs_b, refs))

    def corpus(items):
        return sacrebleu.corpus_bleu([p for p, _ in items], [[r for _, r in items]]).score

    golds = [rng.randrange(3) for _ in range(10)]
    ca = [(g, rng.randrange(3)) for g in golds]
    cb = [(g, p if i >= 7 else rng.randrange(3)) for i, (g, p) in enumerate(ca)]

    def macro(items):
        return f1_score([g for g, _ in items], [p for _, p in items], average="macro", labels=[0, 1, 2],
                        zero_division=0)

    for x, y, ours, reference in ((a, b, aggregator("bleu"), corpus),
                                  (ca, cb, aggregator("f1_macro", ["x", "y", "z"]), macro)):
        observed = reference(y) - reference(x)
        moving = [i for i in range(len(x)) if x[i] != y[i]]
        reached = 0
        for bits in itertools.product((0, 1), repeat=len(moving)):
            pattern = [0] * len(x)
            for i, bit in zip(moving, bits):
                pattern[i] = bit
            xs, ys = _swapped(x, y, pattern)
            reached += abs(reference(ys) - reference(xs)) >= abs(observed) - 1e-9
        result = paired_permutation(x, y, ours)
        assert result["delta"] == pytest.approx(observed, abs=1e-9)
        assert result["p_value"] == pytest.approx(reached / 2 ** len(moving), abs=1e-12)


def test_permutation_of_clusters_swaps_each_cluster_whole():
    import itertools

    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    b = [0.3, 0.4, 0.2, 0.6, 0.5, 0.6, 0.8, 0.8]
    clusters = ["p1", "p1", "p2", "p2", "p3", "p3", None, None]  # None: an item of its own
    observed = np.mean(b) - np.mean(a)
    groups = [[0, 1], [2, 3], [4, 5], [6], [7]]
    reached = 0
    for bits in itertools.product((0, 1), repeat=len(groups)):
        pattern = [0] * 8
        for group, bit in zip(groups, bits):
            for i in group:
                pattern[i] = bit
        xs, ys = _swapped(a, b, pattern)
        reached += abs(np.mean(ys) - np.mean(xs)) >= abs(observed) - 1e-12
    result = paired_permutation(a, b, np.mean, clusters=clusters)
    # p3's items and the last item do not differ: 3 units can flip (2**3 patterns, each counted 4 times above)
    assert result["units_differing"] == 3 and result["p_value"] == pytest.approx(reached / 32)


def test_permutation_goes_monte_carlo_past_the_exact_limit_with_the_plus_one_correction():
    rng = np.random.default_rng(8)
    a = list(rng.normal(size=40))
    b = [x + 1.0 for x in a]  # every item better: no random pattern reaches the observed delta
    result = paired_permutation(a, b, np.mean, iters=999, seed=3)
    assert result["method"] == "monte carlo" and result["p_value"] == pytest.approx(1 / 1000)
    assert paired_permutation(a, b, np.mean, iters=999, seed=3) == result  # seeded
    exact = paired_permutation(a[:12], b[:12], np.mean, exact_units=12)
    assert exact["method"] == "exact" and exact["p_value"] == pytest.approx(2 / 2 ** 12)


def test_t_distribution_and_seed_t_test_equal_scipy():
    from scipy import stats as scipy_stats

    for df in (1, 2, 3, 4, 5, 8, 13, 30):
        for t in (0.0, 0.3, 1.0, 2.1, 4.3, 12.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(t, df), abs=1e-12)
        assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)
    rng = np.random.default_rng(9)
    for m_a, m_b in ((2, 2), (1, 2), (3, 5)):
        a, b = rng.normal(0.6, 0.03, m_a), rng.normal(0.62, 0.03, m_b)
        ours = seed_t_test(list(a), list(b), confidence=0.9)
        reference = scipy_stats.ttest_ind(b, a, equal_var=True)
        assert ours["p_value"] == pytest.approx(reference.pvalue, abs=1e-12) and ours["df"] == m_a + m_b - 2
        low, high = reference.confidence_interval(0.9)
        assert (ours["ci_low"], ours["ci_high"]) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    with pytest.raises(ValueError, match="three in all"):
        seed_t_test([0.5], [0.6])


def test_minimum_detectable_effect_has_the_stated_power_by_statsmodels():
    power = pytest.importorskip("statsmodels.stats.power")
    se, n = 0.02, 200
    mde = minimum_detectable_effect(se, alpha=0.05, power=0.8)
    # a z-test of a paired mean with per-item sd se * sqrt(n): power at delta = mde is 80 % (plus the far tail)
    assert power.normal_power(mde / (se * np.sqrt(n)), n, 0.05) == pytest.approx(0.8, abs=1e-4)
    needed = units_needed(se, n, 0.03)
    sd = se * np.sqrt(n)
    assert power.normal_power(0.03 / sd, needed, 0.05) >= 0.8 > power.normal_power(0.03 / sd, needed - 1, 0.05)


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


def test_bleu_from_statistics_scores_many_resamples_in_one_call_as_sacrebleu_scores_each():
    import sacrebleu

    rng = random.Random(1)
    items = _sentences(rng, 500)
    table = bleu_statistics(items)
    idx = np.random.default_rng(0).integers(0, 500, size=(2000, 500))
    scores = bleu_from_statistics(table[idx].sum(axis=1))  # one array of summed statistics per resample
    assert scores.shape == (2000,)
    for row in (0, 17, 1023, 1999):
        resample = [items[i] for i in idx[row]]
        expected = sacrebleu.corpus_bleu([p for p, _ in resample], [[r for _, r in resample]]).score
        assert scores[row] == pytest.approx(expected, abs=1e-9)
    assert len(set(scores[:50].round(9))) > 1  # the rows are their own resamples, not one score repeated
