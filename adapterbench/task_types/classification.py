"""classification: the model names one of the task's labels, by generation (parsed, with an unparseable class) or by
the log-likelihood of each label's verbalizer; scored with accuracy, macro/weighted F1 and per-class
precision/recall/F1 over (gold, prediction) items."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import Literal, Optional

from pydantic import field_validator

from adapterbench.task_types.multiple_choice_generate import UNPARSEABLE_RATE
from adapterbench.task_types.spec import GenerateOptions, Metric, TaskType, hook_name

PROMPT = ("{% if context %}Context: {{context}}\n{% endif %}Text: {{text}}\n"
          "Label ({{ verbalizers | join(', ') }}):")
PER_CLASS_KINDS = ("precision", "recall", "f1")
ACCURACIES = (Metric("acc", binary=True), UNPARSEABLE_RATE)
AVERAGES = (Metric("f1_macro", "f1_macro"), Metric("f1_weighted", "f1_weighted"))
METRICS = (*ACCURACIES, *AVERAGES)


class Options(GenerateOptions):
    """The suite keys of a classification task."""

    labels: Optional[list[str]] = None  # the class names, in the order their index is recorded
    verbalizers: Optional[dict[str, str]] = None  # label -> the word the model is asked to write (default: the label)
    method: Literal["generate", "loglikelihood"] = "generate"

    @field_validator("labels")
    @classmethod
    def _labels_are_not_metric_names(cls, labels: Optional[list[str]]) -> Optional[list[str]]:
        for label in labels or ():
            if f"f1_{label_slug(label)}" in {m.name for m in AVERAGES}:
                raise ValueError(f"label {label!r} would name its F1 'f1_{label_slug(label)}', the task's average of "
                                 "that name; rename the label")
        return labels


def label_slug(name: str) -> str:
    """A label name as it appears in metric names: accents dropped, runs of other characters -> "_"."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_]+", "_", ascii_name).strip("_") or "label"


def label_slugs(metric_names) -> list[str]:
    """A task's labels (as slugs) in index order, read from its per-sample metric names: the task's hook writes
    precision_<slug> once per label, in label order."""
    return [m[len("precision_"):] for m in metric_names if m.startswith("precision_")]


def check(task) -> None:
    if not task.labels:
        raise ValueError("a classification task needs 'labels' (the list of class names)")
    slugs = [label_slug(label) for label in task.labels]
    clashes = sorted({label for label, slug in zip(task.labels, slugs) if slugs.count(slug) > 1})
    if clashes:
        raise ValueError(f"labels {clashes} give the same metric name; rename one of them")
    if task.verbalizers and set(task.verbalizers) - set(task.labels):
        raise ValueError(f"verbalizers name labels not in 'labels': {sorted(set(task.verbalizers) - set(task.labels))}")


def doc(task, record: dict) -> dict:
    verbalizers = [(task.verbalizers or {}).get(label, label) for label in task.labels]
    return {"id": record["id"], "text": record["text"], "context": record["context"],
            "label": task.labels.index(record["label"]), "labels": task.labels, "verbalizers": verbalizers}


def prompt(task) -> dict:
    if task.method == "loglikelihood":
        return {"output_type": "multiple_choice", "doc_to_text": PROMPT, "doc_to_choice": "{{verbalizers}}",
                "doc_to_target": "label"}
    return {"output_type": "generate_until", "doc_to_text": PROMPT, "doc_to_target": "{{ verbalizers[label] }}"}


def match_metric(name: str) -> Optional[Metric]:
    """precision_<slug>, recall_<slug>, f1_<slug>: one label's score, shown in the task's detail."""
    kind, _, slug = name.partition("_")
    if kind in PER_CLASS_KINDS and slug and name not in {m.name for m in AVERAGES}:
        return Metric(name, "per_class", detail=True)
    return None


def task_metrics(task) -> list[Metric]:
    hook = hook_name(task.name)
    averages = [replace(m, lm_eval_aggregation=f"utils.{hook}_{m.name}") for m in AVERAGES]
    names = [f"{kind}_{label_slug(label)}" for label in task.labels for kind in PER_CLASS_KINDS]
    per_class = [replace(match_metric(name), lm_eval_aggregation=f"utils.{hook}_{name}") for name in names]
    return [*ACCURACIES, *averages, *per_class]


def utils(task) -> list[str]:
    hook = hook_name(task.name)
    # macro F1 averages over the whole label list, also labels no item of this run carries
    lines = [f"{hook}_{m.name} = partial({m.name}, n_labels={len(task.labels)})" for m in AVERAGES]
    for index, label in enumerate(task.labels):
        lines += [f'{hook}_{kind}_{label_slug(label)} = per_class("{kind}", {index})' for kind in PER_CLASS_KINDS]
    return lines


TYPE = TaskType(
    name="classification", summary="name one of the labels (generated or log-likelihood): F1, confusion",
    data_kind="classification", prompt=prompt, doc=doc, options=(Options,), check=check,
    metrics=METRICS, task_metrics=task_metrics, match_metric=match_metric,
    # macro F1: plain accuracy rewards always answering the majority class
    primary=("f1_macro",),
    process_results=lambda task: f"process_classification_{task.method}", utils=utils,
    detail="classification", item_score="acc")
