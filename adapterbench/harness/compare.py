"""Paired comparison of two scored models (or two sets of seeds), item by item: every metric recomputed on the items
both answered, its delta with an interval, a p-value and the minimum detectable delta, Holm across tasks."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from adapterbench import task_types
from adapterbench.harness import stats
from adapterbench.task_types.classification import label_slugs
from adapterbench.tasks import metrics as metric_functions

def aggregate(metric: str, items: Sequence, *, labels: Sequence[str] | None = None) -> float:
    """The task's own aggregation of per-sample `items` of `metric`, as its type declares it: corpus BLEU, lm-eval's
    weighted perplexity and bits per byte, macro/weighted/per-class F1 over (gold, pred) items, or the mean.
    Per-class metrics (precision_<slug>, recall_<slug>, f1_<slug>) need the task's `labels` (see label_slugs); with
    labels, macro and weighted F1 count every label, even one absent from these items."""
    return aggregator(metric, labels)(list(items))


def group_scores(samples_by_model: dict[str, list[dict]], metrics: Sequence[str]) -> list[dict]:
    """Scores per sample group (the value of a task's group_by column), for one task's samples keyed by model:
    [{"group", "n", "values": {model: {metric: aggregate}}}] in first-seen group order; a metric a model's samples
    of the group lack is left out."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for key, samples in samples_by_model.items():
        for s in samples:
            if s.get("group") is not None:
                grouped.setdefault(str(s["group"]), {}).setdefault(key, []).append(s)
    return [{"group": group, "n": max(len(ss) for ss in by_key.values()),
             "values": {key: {m: aggregate(m, [s["metrics"][m] for s in ss if m in s["metrics"]])
                              for m in metrics if any(m in s["metrics"] for s in ss)}
                        for key, ss in by_key.items()}}
            for group, by_key in grouped.items()]


def aggregator(metric: str, labels: Sequence[str] | None = None) -> Callable[[Sequence], float]:
    """aggregate(metric, ...) as a function of the items, carrying `.batched(items)` for the resampling tests in
    harness.stats: a function from a weight array (rows x items: how often each item counts in a row) to every
    row's aggregate, computed with numpy. A bootstrap resample and a permutation's swapped sides are both weight
    rows, so one vectorised aggregation serves both."""
    import numpy as np

    kind = task_types.metric(metric).aggregation
    if kind == "bleu":
        def value(items):
            return metric_functions.bleu_corpus(items)

        def batched(items):
            table = metric_functions.bleu_statistics(items)
            return lambda weights: metric_functions.bleu_from_statistics(weights @ table)
    elif kind in ("perplexity", "bits_per_byte"):
        def value(items):
            return float(_perplexity(kind, sum(i[0] for i in items), sum(i[1] for i in items)))

        def batched(items):
            loglik, size = np.asarray(items, dtype=float).reshape(-1, 2).T
            return lambda weights: _perplexity(kind, weights @ loglik, weights @ size)
    elif kind in ("f1_macro", "f1_weighted", "per_class"):
        score, index = (kind, None) if kind != "per_class" else _per_class(metric, labels)

        def value(items):
            if index is not None:
                return metric_functions.per_class(score, index)(items)
            average = metric_functions.f1_macro if score == "f1_macro" else metric_functions.f1_weighted
            return average(items, _n_labels(items, labels))

        def batched(items):
            return _classification_batched(items, _n_labels(items, labels), score, index)
    else:
        def value(items):
            return math.fsum(float(i) for i in items) / len(items) if items else math.nan

        def batched(items):
            values = np.asarray(items, dtype=float)
            return lambda weights: (weights @ values) / weights.sum(axis=1)
    value.batched = batched
    return value


Side = Sequence[tuple[dict, str]]  # one side of a comparison: (evaluation, model label) per seed


def compare(baseline: dict, baseline_label: str, candidate: dict, candidate_label: str, **options) -> dict:
    """compare_sides with one evaluation per side: model `candidate_label` of `candidate` against
    `baseline_label` of `baseline` (they may be the same evaluation)."""
    return compare_sides([(baseline, baseline_label)], [(candidate, candidate_label)], **options)


def compare_sides(baselines: Side, candidates: Side, *, tasks: Iterable[str] | None = None,
                  metrics: Iterable[str] | None = None, iters: int = stats.PAIRED_ITERS, seed: int = 0,
                  confidence: float = 0.95) -> dict:
    """Compare the candidate side with the baseline side, each one or more (evaluation, label) runs (evaluations
    as database.load_evaluation(..., with_samples=True) gives them), on the items every run answered, paired by
    (task, doc_hash).

    Returns {"rows": [...], "unmatched": {task: {"only_baseline", "only_candidate", "shared"}} (item counts),
    "confidence", "iters", "seed"}. One row per task and metric present on both sides (see paired_row for its
    keys); p_holm is Holm over the rows of the same metric across tasks.
    """
    tasks = None if tasks is None else set(tasks)
    metrics = None if metrics is None else set(metrics)
    runs = [[_items(e, label) for e, label in side] for side in (baselines, candidates)]
    rows, unmatched = [], {}
    for task in dict.fromkeys(t for side in runs for run in side for t in run):
        if tasks is not None and task not in tasks:
            continue
        per_run = [[run.get(task, {}) for run in side] for side in runs]
        every = [run for side in per_run for run in side]
        shared = [key for key in every[0] if all(key in run for run in every[1:])]
        seen = [set().union(*side) for side in per_run]
        unmatched[task] = {"only_baseline": len(seen[0]) - len(shared), "only_candidate": len(seen[1]) - len(shared),
                           "shared": len(shared)}
        if not shared:
            continue
        first = [run[shared[0]]["metrics"] for run in every]
        labels = label_slugs(first[0]) or None
        # a per-class metric whose label is not in the recorded label list cannot be aggregated: left out
        names = [m for m in first[0] if all(m in f for f in first[1:]) and (metrics is None or m in metrics)
                 and not (_per_class_label(m) is not None and _per_class_label(m) not in (labels or ()))]
        for metric in names:
            keys = [k for k in shared if all(run[k]["metrics"].get(metric) is not None for run in every)]
            if not keys:
                continue
            values = [[[_hashable(run[k]["metrics"][metric]) for k in keys] for run in side] for side in per_run]
            clusters = [every[0][k].get("cluster") for k in keys]
            rows.append(paired_row(task, metric, values[0], values[1], labels=labels,
                                   clusters=clusters if any(c is not None for c in clusters) else None,
                                   iters=iters, seed=seed, confidence=confidence))
    for metric in dict.fromkeys(r["metric"] for r in rows):
        group = [r for r in rows if r["metric"] == metric and math.isfinite(r["p_value"])]
        for row, adjusted in zip(group, stats.holm([r["p_value"] for r in group])):
            row["p_holm"] = adjusted
    return {"rows": rows, "unmatched": unmatched, "confidence": confidence, "iters": iters, "seed": seed}


def paired_row(task: str, metric: str, baseline_runs: Sequence[Sequence], candidate_runs: Sequence[Sequence], *,
               labels: Sequence[str] | None = None, clusters: Sequence | None = None, iters: int = stats.PAIRED_ITERS,
               seed: int = 0, confidence: float = 0.95) -> dict:
    """One comparison row from per-item values of `metric`: each side a list of runs (seeds), each run the values
    of the same items in the same order; `clusters` (one key per item, or None) groups items that are not
    independent.

    One run per side asks "do these two checkpoints differ on items like these?": 0/1 metrics get McNemar's exact
    test with Newcombe's interval; every other metric, and 0/1 metrics with clusters, the paired permutation test
    (stats.paired_permutation: swaps items, or whole clusters) with a paired bootstrap interval. Several runs on a
    side ask "does the recipe differ, beyond seed-to-seed noise?": each run's aggregate on the shared items is one
    observation, and Student's t across them (stats.seed_t_test) gives the interval and the p-value.

    Keys: task, metric, higher_is_better, question ("checkpoints" or "recipes"), seeds ([baseline, candidate]),
    test, method, interval, n_items, n_clusters, baseline, candidate (the mean over seeds), delta, ci_low, ci_high,
    p_value, p_holm (NaN until Holm runs), se (the delta's standard error), df (the t-test's, across seeds), mde
    (the minimum detectable delta at alpha = 1 - confidence and 80 % power, see minimum_detectable_delta), and for
    checkpoints se_baseline (the baseline aggregate's own standard error) and, for McNemar, discordance (the share
    of items the two models score differently)."""
    xs, ys = baseline_runs[0], candidate_runs[0]
    spec = task_types.metric(metric)
    if labels is None and spec.aggregation in ("f1_macro", "f1_weighted"):
        # no label list recorded: count the labels every run saw, so all average over the same ones
        labels = [str(i) for i in range(_n_labels([i for run in (*baseline_runs, *candidate_runs) for i in run],
                                                  None))]
    value = aggregator(metric, labels)
    n = len(xs)
    n_clusters = None if clusters is None else len({("item", i) if c is None else c for i, c in enumerate(clusters)})
    row = {"task": task, "metric": metric, "higher_is_better": spec.higher_is_better,
           "seeds": [len(baseline_runs), len(candidate_runs)], "n_items": n, "n_clusters": n_clusters,
           "p_holm": math.nan, "df": None, "discordance": None, "se_baseline": None}
    if len(baseline_runs) > 1 or len(candidate_runs) > 1:
        base = [float(value(run)) for run in baseline_runs]
        cand = [float(value(run)) for run in candidate_runs]
        result = stats.seed_t_test(base, cand, confidence=confidence)
        row.update(question="recipes", test="seed t-test", method=f"t, {result['df']} df", interval="t",
                   baseline=math.fsum(base) / len(base), candidate=math.fsum(cand) / len(cand),
                   delta=result["delta"], ci_low=result["ci_low"], ci_high=result["ci_high"],
                   p_value=result["p_value"], se=result["se"], df=result["df"])
        row["mde"] = minimum_detectable_delta(row, alpha=1 - confidence)
        return row
    row.update(question="checkpoints", baseline=float(value(xs)), candidate=float(value(ys)))
    row["delta"] = row["candidate"] - row["baseline"]
    if spec.binary and clusters is None and all(v in (0, 1) for v in (*xs, *ys)):
        both = sum(1 for x, y in zip(xs, ys) if x == 1 and y == 1)
        only_cand = sum(1 for x, y in zip(xs, ys) if x == 0 and y == 1)
        only_base = sum(1 for x, y in zip(xs, ys) if x == 1 and y == 0)
        low, high = stats.newcombe_paired_interval(both, only_cand, only_base, n - both - only_cand - only_base,
                                                   confidence=confidence)
        discordant, shift = (only_cand + only_base) / n, (only_cand - only_base) / n
        row.update(test="mcnemar", method="exact", interval="newcombe", ci_low=low, ci_high=high,
                   p_value=stats.mcnemar_exact(only_base, only_cand), discordance=discordant,
                   se=math.sqrt(max(0.0, discordant - shift * shift) / n),
                   se_baseline=math.sqrt(row["baseline"] * (1 - row["baseline"]) / n))
    else:
        test = stats.paired_permutation(xs, ys, value, clusters=clusters, iters=iters, seed=seed)
        interval = stats.paired_bootstrap(xs, ys, value, clusters=clusters, iters=iters, seed=seed,
                                          confidence=confidence)
        row.update(test="permutation", method=test["method"],
                   interval="cluster bootstrap" if clusters is not None else "bootstrap",
                   ci_low=interval["ci_low"], ci_high=interval["ci_high"], p_value=test["p_value"],
                   se=interval["se"], se_baseline=interval["se_baseline"])
    row["mde"] = minimum_detectable_delta(row, alpha=1 - confidence)
    return row


def minimum_detectable_delta(row: dict, *, alpha: float, power: float = stats.POWER) -> float:
    """The smallest true delta the row's test would detect at `alpha` with `power`, from the delta's standard
    error `se` (stats.minimum_detectable_effect; across seeds with t quantiles on the row's `df`). An exact
    test on units that flip cannot go below p = 2 / 2**k with k units differing, so for a 0/1 metric at least
    that many items must change: the MDE is never below k / n items' worth."""
    se = row.get("se")
    if se is None or not math.isfinite(se):
        return math.nan
    if row.get("df") is not None:
        return (stats.t_quantile(1 - alpha / 2, row["df"]) + stats.t_quantile(power, row["df"])) * se
    mde = stats.minimum_detectable_effect(se, alpha=alpha, power=power)
    if row["test"] == "mcnemar":
        mde = max(mde, _fewest_flips(alpha) / row["n_items"])
    return mde


def units_for_delta(row: dict, delta: float, *, alpha: float, power: float = stats.POWER) -> int | None:
    """How many units the row's design needs to detect a true `delta` (> 0) at `alpha` with `power`, from its
    measured spread: items (clusters, where the task has them) for a checkpoints row, seeds per side for a recipes
    row (more items barely help there: seed-to-seed noise stays). None where no spread was measured."""
    se = row.get("se")
    if se is None or not math.isfinite(se) or se <= 0:
        return None
    if row["question"] == "recipes":
        m_a, m_b = row["seeds"]
        one_seed = se / math.sqrt(1 / m_a + 1 / m_b)  # the seed-to-seed standard deviation
        for m in range(2, 101):
            df = 2 * m - 2
            quantiles = stats.t_quantile(1 - alpha / 2, df) + stats.t_quantile(power, df)
            if quantiles * one_seed * math.sqrt(2 / m) <= delta:
                return m
        return math.ceil(2 * (stats.minimum_detectable_effect(one_seed, alpha=alpha, power=power) / delta) ** 2)
    needed = stats.units_needed(se, row["n_clusters"] or row["n_items"], delta, alpha=alpha, power=power)
    return max(needed, math.ceil(_fewest_flips(alpha) / delta)) if row["test"] == "mcnemar" else needed


def _fewest_flips(alpha: float) -> int:
    """The fewest discordant pairs, all one way, with which McNemar's exact test reaches p < alpha (2 / 2**k)."""
    return math.ceil(math.log2(2 / alpha) + 1e-12)


def _items(evaluation: dict, label: str) -> dict[str, dict[tuple, dict]]:
    """{task: {item key: sample}} of one model, keyed by content hash (the doc id where no hash was kept) and
    occurrence, so a data file holding the same item twice pairs its copies in order."""
    if label not in {m["label"] for m in evaluation["models"]}:
        known = ", ".join(m["label"] for m in evaluation["models"])
        raise ValueError(f"evaluation {evaluation.get('id')} has no model {label!r}; its models: {known}")
    out: dict[str, dict[tuple, dict]] = {}
    seen: dict[tuple, int] = {}
    for sample in evaluation["samples"]:
        if sample["label"] != label:
            continue
        ident = (sample["task"], sample.get("doc_hash") or f"id:{sample['doc_id']}")
        occurrence = seen[ident] = seen.get(ident, -1) + 1
        out.setdefault(sample["task"], {})[(ident[1], occurrence)] = sample
    return out


def _hashable(value):
    """A stored per-sample value as the aggregations take it: corpus-metric items as tuples."""
    return tuple(value) if isinstance(value, list) else value


def _perplexity(kind: str, loglik, size):
    """lm-eval's weighted_perplexity (exp of minus log-likelihood per word or byte) and bits_per_byte."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.divide(loglik, size)
        return -mean / math.log(2) if kind == "bits_per_byte" else np.exp(-mean)


def _per_class_label(metric: str) -> str | None:
    """The label slug of a per-class metric (precision_<slug>, ...), None for any other metric."""
    return metric.partition("_")[2] if task_types.metric(metric).aggregation == "per_class" else None


def _per_class(metric: str, labels: Sequence[str] | None) -> tuple[str, int]:
    """(kind, label index) of a precision_/recall_/f1_<slug> metric."""
    kind, _, slug = metric.partition("_")
    if not labels or slug not in labels:
        raise ValueError(f"{metric!r} is a per-class metric: aggregating it needs the task's labels (got {labels})")
    return kind, list(labels).index(slug)


def _n_labels(items: Sequence, labels: Sequence[str] | None) -> int:
    import numpy as np

    pairs = np.asarray(items, dtype=np.int64).reshape(-1, 2)
    return max(len(labels or ()), int(pairs.max()) + 1 if len(pairs) else 0)


def _classification_batched(items: Sequence, n_labels: int, kind: str, index: int | None) -> Callable:
    """Per-row confusion matrices as weighted cell counts (weights x one-hot of each item's cell, over the cells
    that occur); then the metrics as metrics._class_stats defines them (an unparseable prediction is a false
    negative of its gold label, a false positive of none; 0.0 where undefined)."""
    import numpy as np

    pairs = np.asarray(items, dtype=np.int64).reshape(-1, 2)
    k = n_labels
    codes = pairs[:, 0] * (k + 1) + np.where(pairs[:, 1] < 0, k, pairs[:, 1])
    present, inverse = np.unique(codes, return_inverse=True)
    one_hot = np.zeros((len(codes), len(present)))
    one_hot[np.arange(len(codes)), inverse] = 1.0

    def batched(weights):
        counts = np.zeros((len(weights), k * (k + 1)))
        counts[:, present] = weights @ one_hot
        counts = counts.reshape(len(weights), k, k + 1)
        tp = np.einsum("bkk->bk", counts[:, :, :k])
        support = counts.sum(axis=2)
        predicted = counts[:, :, :k].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = {"precision": np.where(predicted > 0, tp / predicted, 0.0),
                      "recall": np.where(support > 0, tp / support, 0.0),
                      "f1": np.where(predicted + support > 0, 2 * tp / (predicted + support), 0.0)}
            if index is not None:
                return scores[kind][:, index]
            if kind == "f1_macro":
                return scores["f1"].mean(axis=1)
            total = support.sum(axis=1)
            return np.where(total > 0, (scores["f1"] * support).sum(axis=1) / total, 0.0)

    return batched
