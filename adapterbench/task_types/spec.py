"""What a task type declares: its suite keys, how its items become lm-eval docs and prompts, and its metrics (name,
direction, aggregation, paired test, where a report shows it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from pydantic import BaseModel, Field

# Aggregations compare.aggregator knows: the mean of per-item values, corpus BLEU over (prediction, reference)
# items, lm-eval's weighted perplexity and bits per byte over (log-likelihood, size) items, and F1 / precision /
# recall from (gold, prediction) items (macro or weighted over the labels, or of one label).
AGGREGATIONS = ("mean", "bleu", "perplexity", "bits_per_byte", "f1_macro", "f1_weighted", "per_class")


@dataclass(frozen=True)
class Metric:
    """One metric a task reports, as every consumer reads it: compile (lm-eval's metric_list), compare and the
    gate (direction, aggregation, test), reports (main table or detail)."""

    name: str
    aggregation: str = "mean"  # one of AGGREGATIONS
    higher_is_better: bool = True
    # 0/1 per item, so a paired comparison of two checkpoints takes McNemar's exact test
    binary: bool = False
    # shown in the task's detail (per-class scores, ROUGE precision/recall), not in the report's main table
    detail: bool = False
    # lm-eval's aggregation: a registered name ("mean", "weighted_perplexity") or a hook "utils.NAME"; None: the
    # same as `aggregation`
    lm_eval_aggregation: Optional[str] = None
    # keyword arguments lm-eval passes to its own metric of this name (e.g. exact_match's ignore_case)
    lm_eval_kwargs: tuple[tuple[str, Any], ...] = ()

    def lm_eval_entry(self) -> dict:
        """This metric as an entry of lm-eval's metric_list."""
        from adapterbench.task_types.yaml_tags import Function

        aggregation = self.lm_eval_aggregation or self.aggregation
        return {"metric": self.name,
                "aggregation": Function(aggregation) if aggregation.startswith("utils.") else aggregation,
                "higher_is_better": self.higher_is_better, **dict(self.lm_eval_kwargs)}


def _no_check(task) -> None:
    return None


def _no_hook(task) -> Optional[str]:
    return None


def _no_lines(task) -> list[str]:
    return []


def _no_metric(name: str) -> Optional[Metric]:
    return None


@dataclass(frozen=True)
class TaskType:
    """A kind of task a suite may declare (`type:` in suite.yaml). Everything type-specific lives here; compile,
    compare, gate, reports and the CLI read it and never test a type's name."""

    name: str
    summary: str  # one line, for `adapterbench tasks types` and errors
    data_kind: str  # the record kind its data file holds (datafiles.reading.read_records)
    prompt: Callable[[Any], dict]  # task -> lm-eval's output_type, doc_to_text, doc_to_target (, doc_to_choice)
    doc: Callable[[Any, dict], dict]  # (task, normalized record) -> the lm-eval doc (id and content fields)
    metrics: tuple[Metric, ...]  # the metrics every task of the type reports, in report order
    primary: tuple[str, ...]  # the headline metric: the first of these a task has
    # the suite keys only this type (and types sharing the model) reads: pydantic models whose fields join the
    # task schema; a task of another type that sets one is refused
    options: tuple[type[BaseModel], ...] = ()
    check: Callable[[Any], None] = _no_check  # task -> None, or ValueError saying what to fix
    task_metrics: Optional[Callable[[Any], list[Metric]]] = None  # per-task metrics (default: `metrics`)
    match_metric: Callable[[str], Optional[Metric]] = _no_metric  # a per-task metric known by its name alone
    process_results: Callable[[Any], Optional[str]] = _no_hook  # task -> its per-sample hook in utils.py
    utils: Callable[[Any], list[str]] = _no_lines  # task -> lines of utils.py defining its hooks
    reads_chat: bool = False  # its data may be conversations (the ChatGeneration task class renders them)
    # report: "rouge" or "classification" detail tables, answers side by side, and the per-item score (with the
    # change that counts as fixed or broken) that lists what a candidate fixed or broke
    detail: Optional[str] = None
    answers: bool = True
    item_score: Optional[str] = None
    item_margin: float = 0.5

    def metrics_of(self, task) -> list[Metric]:
        return list(self.task_metrics(task) if self.task_metrics else self.metrics)

    def metric(self, name: str) -> Optional[Metric]:
        """The type's metric called `name`, per-task ones (e.g. f1_<label>) included."""
        return next((m for m in self.metrics if m.name == name), None) or self.match_metric(name)


def hook_name(task_name: str) -> str:
    """A task name as a Python identifier (for its metric hooks in utils.py): the name pattern allows '-'."""
    return task_name.replace("-", "_")


class GenerateOptions(BaseModel):
    """The suite key of every type that generates an answer."""

    max_new_tokens: int = Field(64, gt=0)
