"""compare(): each metric's own aggregation on the paired items, vectorised resamples equal to the plain ones,
items paired by content, and the tests chosen per metric."""

import random

import numpy as np
import pytest

from adapterbench.harness.compare import aggregate, aggregator, compare
from adapterbench.task_types import higher_is_better, primary_metric
from adapterbench.task_types.classification import label_slugs
from adapterbench.tasks.metrics import f1_macro

LABELS = ["training", "evaluation", "quantization"]


def _class_items(rng, n, k=3, unparseable=True):
    return [(rng.randrange(k), rng.randrange(-1 if unparseable else 0, k)) for _ in range(n)]


def test_aggregate_equals_lm_eval_sacrebleu_sklearn_and_the_plain_mean():
    import statistics

    import sacrebleu
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    for scores in ([1.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.125, 1.0, 0.0]):
        for metric in ("acc", "rougeL_f1"):
            assert aggregate(metric, scores) == pytest.approx(statistics.fmean(scores), abs=1e-15)
    # (log-likelihood, words or bytes) per document: a ratio of sums, not a mean of per-document ratios
    loglik = [(-10.0, 5), (-30.0, 15), (-7.5, 3), (-2.0, 8)]
    assert aggregate("word_perplexity", loglik) == pytest.approx(weighted_perplexity(loglik), rel=1e-12)
    assert aggregate("byte_perplexity", loglik) == pytest.approx(weighted_perplexity(loglik), rel=1e-12)
    assert aggregate("bits_per_byte", loglik) == pytest.approx(bits_per_byte(loglik), rel=1e-12)
    pairs = [("the cat sat on the mat", "the cat sat on the red mat"), ("a dog ran fast", "the dog ran"),
             ("LoRA learns a low-rank update", "LoRA learns a low-rank update of the weights"), ("", "nothing said")]
    expected = sacrebleu.corpus_bleu([p for p, _ in pairs], [[r for _, r in pairs]]).score
    assert 0 < expected < 100 and aggregate("bleu", pairs) == pytest.approx(expected, abs=1e-9)
    # (gold, prediction) items, -1 unparseable; with four labels, "architecture" never occurs yet still counts
    labels = [*LABELS, "architecture"]
    golds = [(0, 0), (1, 0), (2, -1), (0, 0), (1, 1), (2, 2), (2, 1), (0, 2), (1, 1)]
    gold, pred = [g for g, _ in golds], [p for _, p in golds]
    indices = list(range(len(labels)))
    for average in ("macro", "weighted"):
        expected = f1_score(gold, pred, labels=indices, average=average, zero_division=0)
        assert aggregate(f"f1_{average}", golds, labels=labels) == pytest.approx(expected, abs=1e-12)
    precision, recall, f1, _ = precision_recall_fscore_support(gold, pred, labels=indices, zero_division=0)
    for k, slug in enumerate(labels):
        for kind, column in (("precision", precision), ("recall", recall), ("f1", f1)):
            assert aggregate(f"{kind}_{slug}", golds, labels=labels) == pytest.approx(column[k], abs=1e-12)
    with pytest.raises(ValueError, match="needs the task's labels"):
        aggregate("precision_training", golds)


def test_batched_weight_rows_equal_the_plain_aggregation_for_every_kind_of_metric():
    rng = random.Random(0)
    words = "the cat sat on a mat dog ran".split()
    cases = {
        "rougeL_f1": [rng.random() for _ in range(40)],
        "bits_per_byte": [(-rng.uniform(10, 200), rng.randint(5, 50)) for _ in range(40)],
        "word_perplexity": [(-rng.uniform(10, 200), rng.randint(5, 50)) for _ in range(40)],
        "bleu": [(" ".join(rng.choices(words, k=rng.randint(0, 8))), " ".join(rng.choices(words, k=6)))
                 for _ in range(40)],
        **{m: _class_items(rng, 40) for m in ("f1_macro", "f1_weighted", "precision_quantization",
                                              "recall_training", "f1_evaluation")},
    }
    # Weight rows as a bootstrap draws them (counts, zeros included) and as a permutation swaps them (0/1).
    weights = np.random.default_rng(0).multinomial(40, [1 / 40] * 40, size=25).astype(float)
    weights = np.vstack([weights, np.random.default_rng(1).integers(0, 2, size=(5, 40))])
    for metric, items in cases.items():
        value = aggregator(metric, LABELS)
        fast = value.batched(items)(weights)
        slow = [value([item for item, w in zip(items, row) for _ in range(int(w))]) for row in weights]
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12, err_msg=metric)


def test_direction_and_primary_metric_per_task_type():
    assert not higher_is_better("word_perplexity") and not higher_is_better("unparseable_rate")
    assert higher_is_better("acc") and higher_is_better("bleu")
    assert primary_metric(["acc", "acc_norm"]) == "acc"
    assert primary_metric(["acc", "unparseable_rate", "f1_macro", "f1_weighted"]) == "f1_macro"
    assert primary_metric(["bleu", "rouge1_f1", "rougeL_f1"]) == "rougeL_f1"
    assert primary_metric(["word_perplexity", "byte_perplexity", "bits_per_byte"]) == "word_perplexity"
    assert label_slugs(["acc", "f1_macro", "precision_b", "recall_b", "precision_a"]) == ["b", "a"]


def _evaluation(models: dict[str, dict[str, list]], eval_id="ev-x") -> dict:
    """{label: {task: [metrics per item]}} -> an evaluation dict; item i of a task has doc_hash h<task><i>."""
    samples = [{"label": label, "task": task, "doc_id": str(i), "doc_hash": f"h{task}{i}", "metrics": m}
               for label, tasks in models.items() for task, items in tasks.items() for i, m in enumerate(items)]
    return {"id": eval_id, "models": [{"label": label} for label in models], "samples": samples}


def test_compare_pairs_items_by_content_and_counts_the_unmatched():
    base = _evaluation({"base": {"mc": [{"acc": 1.0}, {"acc": 0.0}, {"acc": 0.0}, {"acc": 1.0}],
                                 "only_base": [{"acc": 1.0}]}})
    cand = _evaluation({"new": {"mc": [{"acc": 1.0}, {"acc": 1.0}, {"acc": 1.0}]}})
    # The candidate saw items 0-2 in another order: pairing goes by doc_hash, not position.
    cand["samples"] = cand["samples"][::-1]
    cand["samples"][0]["metrics"] = {"acc": 0.0}  # item 2, now wrong
    result = compare(base, "base", cand, "new")
    (row,) = result["rows"]
    assert row["n_items"] == 3 and row["test"] == "mcnemar"
    assert (row["baseline"], row["candidate"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert result["unmatched"] == {"mc": {"only_baseline": 1, "only_candidate": 0, "shared": 3},
                                   "only_base": {"only_baseline": 1, "only_candidate": 0, "shared": 0}}


def test_compare_rows_have_an_interval_and_holm_runs_across_tasks_per_metric():
    rng = random.Random(1)
    tasks = {f"t{j}": [{"acc": float(rng.random() < 0.5), "rougeL_f1": rng.random()} for _ in range(60)]
             for j in range(3)}
    better = {t: [{"acc": 1.0, "rougeL_f1": min(1.0, m["rougeL_f1"] + 0.2)} for m in items]
              for t, items in tasks.items()}
    evaluation = _evaluation({"base": tasks, "adapter": better})
    result = compare(evaluation, "base", evaluation, "adapter", iters=300)
    assert len(result["rows"]) == 6
    for row in result["rows"]:
        assert row["ci_low"] <= row["delta"] <= row["ci_high"]
        assert row["delta"] > 0 and row["p_value"] < 0.01
        assert row["test"] == ("mcnemar" if row["metric"] == "acc" else "permutation")
    acc = [r for r in result["rows"] if r["metric"] == "acc"]
    ranked = sorted(acc, key=lambda r: r["p_value"])
    assert ranked[0]["p_holm"] == pytest.approx(min(1.0, 3 * ranked[0]["p_value"]))
    only = compare(evaluation, "base", evaluation, "adapter", tasks=["t1"], metrics=["acc"], iters=300)
    assert [(r["task"], r["metric"]) for r in only["rows"]] == [("t1", "acc")]
    assert only["rows"][0]["p_holm"] == only["rows"][0]["p_value"]


def test_compare_uses_the_task_label_list_for_macro_f1():
    # Four labels recorded; label 3 never occurs. Macro F1 averages over all four, as the task's own score does.
    keys = {f"{kind}_{slug}": None for slug in ("a", "b", "c", "d") for kind in ("precision", "recall", "f1")}
    items = [(0, 0), (1, 1), (2, 0), (1, 1)]
    base = [{"f1_macro": list(i), **{k: list(i) for k in keys}} for i in items]
    cand = [{"f1_macro": [g, g], **{k: [g, g] for k in keys}} for g, _ in items]
    evaluation = _evaluation({"base": {"topics": base}, "adapter": {"topics": cand}})
    rows = {r["metric"]: r for r in compare(evaluation, "base", evaluation, "adapter", iters=100)["rows"]}
    assert rows["f1_macro"]["baseline"] == pytest.approx(f1_macro(items, 4))
    assert rows["f1_macro"]["candidate"] == pytest.approx(0.75)  # three perfect labels, one absent
    assert rows["recall_c"]["baseline"] == 0.0 and rows["recall_c"]["candidate"] == 1.0


def test_compare_refuses_a_label_the_evaluation_lacks():
    evaluation = _evaluation({"base": {"mc": [{"acc": 1.0}]}})
    with pytest.raises(ValueError, match="no model 'other'"):
        compare(evaluation, "base", evaluation, "other")


def test_compare_swaps_and_resamples_clusters_from_the_samples():
    rng = random.Random(2)
    base = [{"acc": float(rng.random() < 0.5), "rougeL_f1": rng.random()} for _ in range(40)]
    cand = [{"acc": float(rng.random() < 0.6), "rougeL_f1": rng.random()} for _ in range(40)]
    evaluation = _evaluation({"base": {"qa": base}, "new": {"qa": cand}})
    for sample in evaluation["samples"]:
        sample["cluster"] = f"p{int(sample['doc_id']) // 4}"  # ten paragraphs of four questions
    rows = {r["metric"]: r for r in compare(evaluation, "base", evaluation, "new", iters=300)["rows"]}
    for row in rows.values():
        assert row["n_clusters"] == 10 and row["interval"] == "cluster bootstrap" and row["test"] == "permutation"
    # exact over the paragraphs that differ: a p-value on a grid of 1 / 2**k with k <= 10
    acc = rows["acc"]
    assert acc["method"] == "exact" and (acc["p_value"] * 2 ** 10) == pytest.approx(round(acc["p_value"] * 2 ** 10))
    for sample in evaluation["samples"]:
        sample["cluster"] = None
    assert compare(evaluation, "base", evaluation, "new", iters=300)["rows"][0]["test"] == "mcnemar"
