"""The records adapterbench keeps: an evaluation, its models, scores and per-sample records, as the store saves and
loads them and as evaluate(), generate() and the trainer build them.

Plain dicts with a declared shape (TypedDicts): everything downstream reads them as `record["key"]`, and
`Score(task=..., ...)` states the shape where one is made. A key marked NotRequired may be left out by whoever
builds the record; an evaluation loaded from the store has every key."""

# no `from __future__ import annotations`: TypedDict reads NotRequired from evaluated annotations only (Python 3.11)
from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["eval", "generate", "train_step"]
Role = Literal["base", "adapter"]


class SuiteRef(TypedDict):
    """What the models were run on."""

    name: str
    """The suite's name; for `generate`, the prompts file's stem; for a training step, its suite's stem or "val"."""
    path: str | None
    """The suite (or prompts) file, resolved; None for a suite given as a SuiteConfig or a step with no suite."""


class ModelEntry(TypedDict):
    """One model of an evaluation: the base or an adapter on it, with what identifies it."""

    label: str
    """Unique within the evaluation: "base" for the base, the adapter's label otherwise; names its scores/samples."""
    role: Role
    """"base" or "adapter" (the store refuses anything else)."""
    path: str | None
    """Where the model was loaded from: the base's resolved folder, the adapter dir, or a training run's folder."""
    sha256: str | None
    """Content hash: provenance.base_sha for the base, the adapter's identity hash; None for a training step."""
    base_name: str | None
    """The base as the user named it (a catalogue name, a folder, a GGUF file)."""
    manifest: dict | None
    """The adapter's training manifest.json, when it has one."""
    lm_eval: NotRequired[dict | None]
    """lm-eval's results dict for this model (what results_*.json holds); not made by `generate`."""
    lm_eval_samples: NotRequired[dict[str, list[dict]]]
    """lm-eval's own per-sample log by task, for `eval --output-dir`: a fresh evaluate() has it, the store does not
    keep it."""


class Score(TypedDict):
    """One metric of one model on one task."""

    label: str
    """The model (a ModelEntry's label)."""
    task: str
    """The suite task, or "val" for a training run's validation loss."""
    metric: str
    """lm-eval's metric name, without its filter (evaluate keeps each metric's one filtered value)."""
    value: float
    """The aggregate; NaN where lm-eval gave NaN (SQLite keeps it as NULL, loaded back as NaN)."""
    stderr: float | None
    """Its standard error (lm-eval's, or bootstrapped from the samples); None where there is none (lm-eval's "N/A"
    and NaN are saved as None)."""
    n: int | None
    """How many items were scored (lm-eval's effective n-samples)."""


class Sample(TypedDict):
    """One model's record of one item of a task."""

    label: str
    """The model (a ModelEntry's label)."""
    task: str
    """The task (for `generate`, the prompts file's stem)."""
    doc_id: str
    """The item's id in its data file (else lm-eval's index of it; for `generate`, the prompts file's STEM-N)."""
    doc_hash: str | None
    """16 hex digits of the sha256 of the item's content (for `generate`, of its prompt): pairs the same item across
    evaluations, whatever its id."""
    prompt: str | None
    """The model's input as lm-eval built it (its first request's context); for `generate`, the prompt as given."""
    prediction: str | None
    """The model's answer: generated text, the chosen option, or lm-eval's responses as JSON."""
    reference: str | None
    """The expected answer, when the item has one."""
    metrics: dict[str, Any]
    """Per-sample metric values (numbers, or lists for corpus metrics' items), as JSON; {} for `generate`."""
    group: NotRequired[str | None]
    """The item's group_by value, when its task has group_by."""
    cluster: NotRequired[str | None]
    """The item's cluster_by value (items that are not independent), when its task has cluster_by."""


class Evaluation(TypedDict):
    """Models run on a suite (or a prompts file) together: the unit the store saves in one transaction."""

    id: NotRequired[str]
    """database.new_evaluation_id(); save_evaluation makes one when it is left out."""
    created_at: NotRequired[str]
    """UTC time, ISO 8601; save_evaluation takes the time of saving when it is left out."""
    kind: NotRequired[Kind]
    """"eval" (the default), "generate" (answers, no scores) or "train_step" (a point of a learning curve)."""
    suite: SuiteRef
    """What the models were run on."""
    base_ref: str
    """The base as the user named it."""
    command: str
    """The command line that made it."""
    config: dict
    """The options it was made with (limit, dtype, quant...; a training step: the whole train config)."""
    environment: dict
    """provenance.environment(): Python, platform and package versions ({} for a training step)."""
    train_run: NotRequired[str | None]
    """A training step's run folder, resolved."""
    step: NotRequired[int | None]
    """A training step's optimizer step."""
    tokens_seen: NotRequired[int | None]
    """A training step's tokens seen so far."""
    models: list[ModelEntry]
    """The models, base first: their order is the order of every table."""
    scores: list[Score]
    """Every model's scores."""
    samples: list[Sample]
    """Every model's per-sample records (empty when loaded with with_samples=False)."""


class EvaluationSummary(TypedDict):
    """An evaluation's line in `runs list` (database.list_evaluations)."""

    id: str
    """Its id."""
    created_at: str
    """When it was saved (UTC, ISO 8601)."""
    kind: Kind
    """"eval", "generate" or "train_step"."""
    suite_name: str
    """Its suite's name."""
    base_ref: str
    """The base as the user named it."""
    n_tasks: int
    """How many tasks it has scores for."""
    models: list[str]
    """Its models' labels, base first."""
