"""Paired comparison of two scored models, item by item: every metric recomputed on the items both answered, its
delta with an interval and a p-value (McNemar for 0/1 metrics, paired bootstrap otherwise), Holm across tasks."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from adapterbench.harness import stats
from adapterbench.tasks import metrics as task_metrics

LOWER_IS_BETTER = frozenset({"word_perplexity", "byte_perplexity", "bits_per_byte", "unparseable_rate"})
BINARY_METRICS = frozenset({"acc", "acc_norm", "unparseable_rate"})  # 0/1 per item: McNemar's exact test
PERPLEXITIES = frozenset({"word_perplexity", "byte_perplexity", "bits_per_byte"})
CLASS_AVERAGES = frozenset({"f1_macro", "f1_weighted"})
PER_CLASS_KINDS = ("precision", "recall", "f1")
# Headline metric by preference, the first one a task has (see primary_metric for why).
PRIMARY_ORDER = ("f1_macro", "acc", "rougeL_f1", "bleu", "word_perplexity")


def higher_is_better(metric: str) -> bool:
    """False for perplexities, bits per byte, the unparseable rate and losses (training-step evaluations score a
    validation loss); True for every other metric we compute."""
    return metric not in LOWER_IS_BETTER and not metric.endswith("loss")


def primary_metric(metric_names: Iterable[str]) -> str:
    """The headline metric of a task, from the metric names it has: f1_macro for classification (plain accuracy
    rewards always answering the majority class), acc for multiple choice, rougeL_f1 for generation, word_perplexity
    for perplexity; otherwise the first name. Generation uses ROUGE-L F1 rather than BLEU because domain answers are
    short and few: corpus BLEU on them is mostly 4-gram smoothing and brevity penalty (single digits that jump with
    one answer), while ROUGE-L F1 is a per-answer score in [0, 1] whose mean moves with each answer's overlap."""
    names = list(metric_names)
    if not names:
        raise ValueError("a task with no metrics has no primary metric")
    return next((m for m in PRIMARY_ORDER if m in names), names[0])


def label_slugs(metric_names: Iterable[str]) -> list[str]:
    """A classification task's labels (as slugs) in index order, read from its per-sample metric names: the task's
    hook writes precision_<slug> once per label, in label order."""
    return [m[len("precision_"):] for m in metric_names if m.startswith("precision_")]


def aggregate(metric: str, items: Sequence, *, labels: Sequence[str] | None = None) -> float:
    """The task's own aggregation of per-sample `items` of `metric`: corpus BLEU, lm-eval's weighted perplexity and
    bits per byte, macro/weighted/per-class F1 over (gold, pred) items, else the mean. Per-class metrics
    (precision_<slug>, recall_<slug>, f1_<slug>) need the task's `labels` (see label_slugs); with labels, macro and
    weighted F1 count every label, even one absent from these items."""
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
    """aggregate(metric, ...) as a function of the items, carrying `.batched(items)` for stats.paired_bootstrap:
    a function from an index array (resamples x items) to every resample's aggregate, computed with numpy."""
    import numpy as np

    if metric == "bleu":
        def value(items):
            return task_metrics.bleu_corpus(items)

        def batched(items):
            table = task_metrics.bleu_statistics(items)
            return lambda idx: task_metrics.bleu_from_statistics(table[idx].sum(axis=1))
    elif metric in PERPLEXITIES:
        def value(items):
            return float(_perplexity(metric, sum(i[0] for i in items), sum(i[1] for i in items)))

        def batched(items):
            loglik, size = np.asarray(items, dtype=float).reshape(-1, 2).T
            return lambda idx: _perplexity(metric, loglik[idx].sum(axis=1), size[idx].sum(axis=1))
    elif metric in CLASS_AVERAGES or _looks_per_class(metric):
        kind, index = (metric, None) if metric in CLASS_AVERAGES else _per_class(metric, labels)

        def value(items):
            if index is not None:
                return task_metrics.per_class(kind, index)(items)
            average = task_metrics.f1_macro if kind == "f1_macro" else task_metrics.f1_weighted
            return average(items, _n_labels(items, labels))

        def batched(items):
            return _classification_batched(items, _n_labels(items, labels), kind, index)
    else:
        def value(items):
            return math.fsum(float(i) for i in items) / len(items) if items else math.nan

        def batched(items):
            values = np.asarray(items, dtype=float)
            return lambda idx: values[idx].mean(axis=1)
    value.batched = batched
    return value


def compare(baseline: dict, baseline_label: str, candidate: dict, candidate_label: str, *,
            tasks: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
            iters: int = stats.PAIRED_ITERS, seed: int = 0, confidence: float = 0.95) -> dict:
    """Compare model `candidate_label` of evaluation `candidate` with `baseline_label` of `baseline` (evaluations
    as store.load_evaluation(..., with_samples=True) gives them; they may be the same one), on the items both
    answered, paired by (task, doc_hash).

    Returns {"rows": [...], "unmatched": {task: {"only_baseline", "only_candidate", "shared"}} (item counts),
    "confidence", "iters", "seed"}. One row per task and metric present on both sides: task, metric,
    higher_is_better, test, n_items, baseline, candidate (each recomputed on the paired items only),
    delta = candidate - baseline, ci_low, ci_high (at `confidence`), p_value, and p_holm (Holm over the rows of the
    same metric across tasks).
    0/1 metrics (acc, acc_norm, unparseable_rate) get McNemar's exact test and Newcombe's paired score interval
    (deterministic, and sound with few discordant pairs); every other metric gets the paired bootstrap (its
    percentile interval and the p-value that inverts it, see stats.paired_bootstrap). Per-class metrics use the
    task's label list read from the per-sample records.
    """
    tasks = None if tasks is None else set(tasks)
    metrics = None if metrics is None else set(metrics)
    base_items, cand_items = _items(baseline, baseline_label), _items(candidate, candidate_label)
    rows, unmatched = [], {}
    for task in dict.fromkeys([*base_items, *cand_items]):
        if tasks is not None and task not in tasks:
            continue
        a, b = base_items.get(task, {}), cand_items.get(task, {})
        shared = [key for key in a if key in b]
        unmatched[task] = {"only_baseline": len(a) - len(shared), "only_candidate": len(b) - len(shared),
                           "shared": len(shared)}
        if not shared:
            continue
        first_a, first_b = a[shared[0]], b[shared[0]]
        labels = label_slugs(first_a) or None
        # a per-class metric whose label is not in the recorded label list cannot be aggregated: left out
        names = [m for m in first_a if m in first_b and (metrics is None or m in metrics)
                 and not (_looks_per_class(m) and m.partition("_")[2] not in (labels or ()))]
        for metric in names:
            pairs = [(a[k][metric], b[k][metric]) for k in shared
                     if a[k].get(metric) is not None and b[k].get(metric) is not None]
            if pairs:
                xs, ys = [_plain(x) for x, _ in pairs], [_plain(y) for _, y in pairs]
                rows.append(_row(task, metric, xs, ys, labels, iters=iters, seed=seed, confidence=confidence))
    for metric in dict.fromkeys(r["metric"] for r in rows):
        group = [r for r in rows if r["metric"] == metric and math.isfinite(r["p_value"])]
        for row, adjusted in zip(group, stats.holm([r["p_value"] for r in group])):
            row["p_holm"] = adjusted
    return {"rows": rows, "unmatched": unmatched, "confidence": confidence, "iters": iters, "seed": seed}


def _row(task: str, metric: str, xs: list, ys: list, labels, *, iters: int, seed: int, confidence: float) -> dict:
    if labels is None and metric in CLASS_AVERAGES:
        # no label list recorded: count the labels both sides saw, so both average over the same ones
        labels = [str(i) for i in range(_n_labels(xs + ys, None))]
    value = aggregator(metric, labels)
    base, cand = float(value(xs)), float(value(ys))
    if metric in BINARY_METRICS and all(v in (0, 1) for v in (*xs, *ys)):
        both = sum(1 for x, y in zip(xs, ys) if x == 1 and y == 1)
        only_cand = sum(1 for x, y in zip(xs, ys) if x == 0 and y == 1)
        only_base = sum(1 for x, y in zip(xs, ys) if x == 1 and y == 0)
        low, high = stats.newcombe_paired_interval(both, only_cand, only_base, len(xs) - both - only_cand - only_base,
                                                   confidence=confidence)
        test, p_value = "mcnemar", stats.mcnemar_exact(only_base, only_cand)
    else:
        result = stats.paired_bootstrap(xs, ys, value, iters=iters, seed=seed, confidence=confidence)
        test, low, high, p_value = "bootstrap", result["ci_low"], result["ci_high"], result["p_value"]
    return {"task": task, "metric": metric, "higher_is_better": higher_is_better(metric), "test": test,
            "n_items": len(xs), "baseline": base, "candidate": cand, "delta": cand - base, "ci_low": low,
            "ci_high": high, "p_value": p_value, "p_holm": math.nan}


def _items(evaluation: dict, label: str) -> dict[str, dict[tuple, dict]]:
    """{task: {item key: per-sample metrics}} of one model, keyed by content hash (the doc id where no hash was
    kept) and occurrence, so a data file holding the same item twice pairs its copies in order."""
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
        out.setdefault(sample["task"], {})[(ident[1], occurrence)] = sample["metrics"]
    return out


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def _perplexity(metric: str, loglik, size):
    """lm-eval's weighted_perplexity (exp of minus log-likelihood per word or byte) and bits_per_byte."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.divide(loglik, size)
        return -mean / math.log(2) if metric == "bits_per_byte" else np.exp(-mean)


def _looks_per_class(metric: str) -> bool:
    kind, _, slug = metric.partition("_")
    return kind in PER_CLASS_KINDS and bool(slug) and metric not in CLASS_AVERAGES


def _per_class(metric: str, labels: Sequence[str] | None) -> tuple[str, int]:
    """(kind, label index) of a precision_/recall_/f1_<slug> metric."""
    kind, _, slug = metric.partition("_")
    if not labels or slug not in labels:
        raise ValueError(f"{metric!r} is a per-class metric: aggregating it needs the task's labels (got {labels})")
    return kind, list(labels).index(slug)


def _n_labels(items: Sequence, labels: Sequence[str] | None) -> int:
    return max([len(labels or ())] + [max(int(g), int(p)) + 1 for g, p in items])


def _classification_batched(items: Sequence, n_labels: int, kind: str, index: int | None) -> Callable:
    """Per-resample confusion matrices by one bincount; then the metrics as metrics._class_stats defines them (an
    unparseable prediction is a false negative of its gold label, a false positive of none; 0.0 where undefined)."""
    import numpy as np

    pairs = np.asarray(items, dtype=np.int64).reshape(-1, 2)
    k = n_labels
    codes = pairs[:, 0] * (k + 1) + np.where(pairs[:, 1] < 0, k, pairs[:, 1])
    cells = k * (k + 1)

    def batched(idx):
        flat = codes[idx] + cells * np.arange(len(idx))[:, None]
        counts = np.bincount(flat.ravel(), minlength=cells * len(idx)).reshape(len(idx), k, k + 1)
        tp = np.einsum("bkk->bk", counts[:, :, :k]).astype(float)
        support = counts.sum(axis=2).astype(float)
        predicted = counts[:, :, :k].sum(axis=1).astype(float)
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
