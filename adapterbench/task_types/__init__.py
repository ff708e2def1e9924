"""The registry of task types: each type is one module of this package declaring a TaskType (see spec.py); adding a
type is one module here plus its line in TYPES. Lookups by metric name serve stored results, which keep names only."""

from __future__ import annotations

from typing import Iterable, Optional

from adapterbench.task_types import (classification, exact_match, generation, multiple_choice,
                                     multiple_choice_generate, perplexity)
from adapterbench.task_types.spec import Metric, TaskType

# Order matters where a name is looked up across types: metric() takes the first declaration (the test that every
# name means the same everywhere makes that safe) and primary_metric's fallback prefers earlier types' headlines (a
# classification task also has acc, and its headline is f1_macro).
TYPES: dict[str, TaskType] = {t.name: t for t in (
    classification.TYPE, multiple_choice.TYPE, multiple_choice_generate.TYPE, generation.TYPE, exact_match.TYPE,
    perplexity.TYPE)}


def task_type(name: str) -> TaskType:
    return TYPES[name]


def metric(name: str) -> Metric:
    """The declaration of the metric called `name`, whichever type reports it; a name no type declares (a
    training run's val_loss, a metric of an older version) is a mean, lower is better only for losses."""
    for t in TYPES.values():
        found = t.metric(name)
        if found is not None:
            return found
    return Metric(name, higher_is_better=not name.endswith("loss"))


def higher_is_better(name: str) -> bool:
    return metric(name).higher_is_better


def type_of(metric_names: Iterable[str]) -> Optional[TaskType]:
    """The type whose every metric is among `metric_names` (the one with most, where several are), for results
    whose suite file is gone; None when no type matches."""
    names = set(metric_names)
    matching = [t for t in TYPES.values() if {m.name for m in t.metrics} <= names]
    return max(matching, key=lambda t: len(t.metrics), default=None)


def primary_metric(metric_names: Iterable[str]) -> str:
    """A task's headline metric from the metric names it has: its type's primary (see each type's module for why),
    else the first preferred metric of any type among the names, else the first name."""
    names = list(metric_names)
    if not names:
        raise ValueError("a task with no metrics has no primary metric")
    found = type_of(names)
    preferences = [*(found.primary if found else ()), *(m for t in TYPES.values() for m in t.primary)]
    return next((m for m in preferences if m in names), names[0])
