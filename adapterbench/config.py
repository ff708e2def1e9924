"""Pydantic schemas of suite.yaml, train.yaml and gate.yaml, and their loading: unknown keys are errors with a "did
you mean", every error names file, line, key and value, relative paths resolve from the file's folder."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from adapterbench import paths, task_types
from adapterbench.errors import UserError
from adapterbench.task_types.spec import hook_name

LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _file: Optional[Path] = PrivateAttr(None)  # the YAML file it was loaded from, for errors found later


def _resolve(value: Optional[Path], info: ValidationInfo) -> Optional[Path]:
    base = (info.context or {}).get("base_dir")
    if value is None or base is None or value.is_absolute():
        return value
    return (Path(base) / value).resolve()


def _option_models() -> list[type[BaseModel]]:
    """Every task type's own suite keys, each model once: a model another one extends (GenerateOptions) comes in
    through it."""
    models = list(dict.fromkeys(model for t in task_types.TYPES.values() for model in t.options))
    return [m for m in models if not any(other is not m and issubclass(other, m) for other in models)]


class TaskKeys(Strict):
    """The keys of suite.yaml every task type reads."""
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    type: Literal[tuple(task_types.TYPES)]  # type: ignore[valid-type]
    data: Path
    fields: dict[str, str] = {}
    limit: Optional[int] = Field(None, gt=0)  # score only the first LIMIT items of the data file
    num_fewshot: int = Field(0, ge=0)
    fewshot_data: Optional[Path] = None
    chat_template: bool = True
    system_prompt: Optional[str] = None
    group_by: Optional[str] = None  # a data column (e.g. fail_mode): scores are also broken down by its values
    # a data column (e.g. paragraph): items sharing a value are not independent, so tests and intervals swap and
    # resample them together
    cluster_by: Optional[str] = None
    language: Optional[str] = Field(None, pattern=LANGUAGE_PATTERN)  # default: the suite's

    resolve_paths = field_validator("data", "fewshot_data")(_resolve)

    @model_validator(mode="after")
    def _keys_of_its_type(self):
        kind = task_types.task_type(self.type)
        own = {key for model in kind.options for key in model.model_fields}
        for key in sorted(self.model_fields_set):
            readers = [t.name for t in task_types.TYPES.values() if any(key in m.model_fields for m in t.options)]
            if readers and key not in own:
                raise ValueError(f"'{key}' is read by {' and '.join(readers)} tasks, not by {self.type}")
        kind.check(self)
        if self.num_fewshot and self.fewshot_data is None:
            raise ValueError("num_fewshot > 0 needs 'fewshot_data' (a train file to draw examples from)")
        return self


class TaskConfig(*_option_models(), TaskKeys):
    """A task of suite.yaml: TaskKeys, then the keys of one type (labels, max_new_tokens, ...), declared by that
    type's module in adapterbench/task_types (the bases come first so that the common keys are listed first)."""


class SuiteConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    tasks: list[TaskConfig] = Field(min_length=1)
    # the language of references and answers (BCP 47, e.g. en, ru, zh-Hans): ROUGE stems English only and
    # tokenizes every other language by Unicode letters and digits
    language: str = Field("en", pattern=LANGUAGE_PATTERN)

    @model_validator(mode="after")
    def _unique_task_names(self):
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        # a task's metric hooks are Python names in the generated utils.py, where '-' is written '_'
        hooks = [hook_name(n) for n in names]
        clashes = sorted({n for n, h in zip(names, hooks) if hooks.count(h) > 1})
        if clashes:
            raise ValueError(f"task names {', '.join(clashes)} differ only in '-' versus '_'; rename one of them")
        for task in self.tasks:
            task.language = task.language or self.language
        return self


class DataConfig(Strict):
    # task: the records of a suite task's data kind, rendered as that task asks and scores them
    format: Literal["text", "instruction", "chat", "task"]
    train: Path
    val: Optional[Path] = None
    fields: dict[str, str] = {}
    suite: Optional[Path] = None  # format task: the suite file, and the name of its task
    task: Optional[str] = None

    resolve_paths = field_validator("train", "val", "suite")(_resolve)

    @model_validator(mode="after")
    def _task_names_a_suite_task(self):
        if self.format == "task" and (self.suite is None or self.task is None):
            raise ValueError("format: task needs 'suite' (a suite file) and 'task' (the name of one of its tasks)")
        if self.format != "task" and (self.suite is not None or self.task is not None):
            raise ValueError("'suite' and 'task' belong to format: task")
        if self.format == "task" and self.fields:
            raise ValueError("format: task reads the data as the task does, with the task's own 'fields'")
        return self


class LoraConfig(Strict):
    r: int = Field(16, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], list[str]] = "all-linear"
    layers: Optional[list[int]] = None



class EvalConfig(Strict):
    every: int = Field(50, gt=0)
    suite: Optional[Path] = None
    tasks: Optional[list[str]] = None
    limit: Optional[int] = Field(None, gt=0)

    resolve_paths = field_validator("suite")(_resolve)


class EarlyStoppingConfig(Strict):
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(3, gt=0)
    min_delta: float = Field(0.0, ge=0)


class CheckpointConfig(Strict):
    every: Optional[int] = Field(None, gt=0)
    keep: int = Field(2, ge=1)


class TrainConfig(Strict):
    base_model: str = "default"
    data: DataConfig
    lora: LoraConfig = LoraConfig()
    quant: Literal["none", "nf4"] = "nf4"
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_grad_norm: float = Field(0.3, gt=0)
    gradient_checkpointing: bool = False
    micro_batch_tokens: int = Field(512, gt=0)
    max_length: int = Field(512, gt=8)
    max_steps: Optional[int] = Field(None, gt=0)
    epochs: Optional[float] = Field(None, gt=0)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seeds are 32-bit
    eval: Optional[EvalConfig] = None
    early_stopping: Optional[EarlyStoppingConfig] = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    # experiment trackers, named as accelerate's log_with names them (tensorboard, wandb, mlflow, trackio, comet_ml,
    # ...): checked against accelerate, and installed, before the model loads; TensorBoard writes into OUT/logs
    report_to: list[str] = []
    out: Path = Path("runs/run")

    resolve_paths = field_validator("out")(_resolve)

    @model_validator(mode="after")
    def _one_length(self):
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of 'max_steps' and 'epochs'")
        return self


def _check_max_drop(value: Union[float, str, None]) -> Union[float, str, None]:
    if value is None:
        return None
    if isinstance(value, str):
        number = value.strip().removesuffix("%")
        try:
            ok = value.strip().endswith("%") and float(number) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("max_drop is a number in the metric's units (e.g. 1.0) or a share of the baseline "
                             "value (e.g. '5%'), never negative")
        return value.strip()
    if value < 0:
        raise ValueError("max_drop must be >= 0: it is the largest drop tolerated")
    return value


class GateRule(Strict):
    task: str
    metric: Optional[str] = None  # default: the task's primary metric
    max_drop: Optional[Union[float, str]] = None  # default: the file's max_drop
    alpha: Optional[float] = Field(None, gt=0, lt=1)  # default: the file's alpha

    check_max_drop = field_validator("max_drop")(_check_max_drop)


class GateConfig(Strict):
    """gate.yaml. A rule regresses when the candidate is worse than the baseline by more than max_drop (metric
    units, or "N%" of the baseline value) and its Holm-adjusted p-value is below alpha; a rule without metric,
    max_drop or alpha takes the task's primary metric and the file's values; no rules: every task of the baseline."""
    suite: Optional[Path] = None  # scores a REF given as an adapter dir
    base: str = "default"
    alpha: float = Field(0.05, gt=0, lt=1)
    max_drop: Union[float, str] = 0.0
    confidence: float = Field(0.95, gt=0, lt=1)
    iters: int = Field(2000, ge=100)
    seed: int = Field(0, ge=0)
    rules: list[GateRule] = []

    resolve_paths = field_validator("suite")(_resolve)
    check_max_drop = field_validator("max_drop")(_check_max_drop)

    @model_validator(mode="after")
    def _unique_rules(self):
        keys = [(r.task, r.metric) for r in self.rules]
        dupes = sorted({f"{t}/{m or 'primary'}" for t, m in keys if keys.count((t, m)) > 1})
        if dupes:
            raise ValueError(f"each task/metric may have one rule; repeated: {', '.join(dupes)}")
        return self


def load_suite(path: str | Path) -> SuiteConfig:
    return load_config(path, SuiteConfig)


def load_train(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    return load_config(path, TrainConfig, overrides)


def load_gate(path: str | Path) -> GateConfig:
    return load_config(path, GateConfig)


def key_line(path: str | Path | None, loc: tuple) -> int | None:
    """The line of key path `loc` (e.g. ('rules', 0, 'task')) in a YAML file, or of its nearest parent found; for
    errors found after loading, such as a rule naming a task the store does not have."""
    try:
        lines = _key_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, TypeError, UnicodeDecodeError):
        return None
    return next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)


def config_error(config: Strict, loc: tuple, message: str) -> UserError:
    """An error about key `loc` of a loaded config found only later (against the model, the suite or the store),
    naming the file and line it came from."""
    path = config._file
    field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    return UserError(message, path=path, line=key_line(path, loc) if path else None, field=field)


def load_config(path: str | Path, schema: type[BaseModel], overrides: list[str] = ()):
    path = paths.input_file(path, "config file")
    try:
        text = path.read_text(encoding="utf-8")
        raw, lines = _parse_yaml(text)
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise UserError(f"invalid YAML: {getattr(err, 'problem', err)}", path=path, line=line) from None
    if not isinstance(raw, dict):
        raise UserError(f"expected a mapping of keys at the top, got {type(raw).__name__}", path=path)
    for item in overrides:
        _apply_override(raw, item)
    try:
        config = schema.model_validate(raw, context={"base_dir": path.parent})
    except ValidationError as err:
        raise _user_error(err, schema, raw, path, lines) from None
    config._file = path
    return config


def _apply_override(raw: dict, item: str) -> None:
    """`lora.r=8` sets raw['lora']['r'] = 8; the value is parsed as YAML (numbers, lists, booleans)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"override expects KEY=VALUE (e.g. lora.r=8), got {item!r}")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"override {item!r}: '{part}' is not a section")
    try:
        node[leaf] = _parse_yaml(value)[0]
    except yaml.YAMLError as err:
        raise UserError(f"override {item!r}: invalid YAML value: {getattr(err, 'problem', err)}") from None


# Nodes a document may expand to once its aliases are followed: a suite of 200 tasks is ~5,000; a 600-byte "billion
# laughs" document of nested aliases is billions, and walking it (for lines, then in pydantic) would never end.
MAX_YAML_NODES = 100_000


def _compose(text: str):
    """The document's node graph, refused (a YAML error with its line) when aliases make it recursive or expand it
    beyond MAX_YAML_NODES; the expanded size is counted once per distinct node, so counting itself is linear."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    sizes: dict[int, int | None] = {}  # None: being counted, so meeting it again is a cycle

    def refuse(n, problem: str):
        raise yaml.composer.ComposerError(None, None, problem, n.start_mark)

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)] if sizes[id(n)] is not None else refuse(n, "an alias refers to a node it is in")
        sizes[id(n)] = None
        children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else \
            n.value if isinstance(n, yaml.SequenceNode) else []
        sizes[id(n)] = 1 + sum(size(c) for c in children)
        if sizes[id(n)] > MAX_YAML_NODES:
            refuse(n, f"aliases (*name) expand this document beyond {MAX_YAML_NODES:,} values; write it out plainly")
        return sizes[id(n)]

    if node is not None:
        size(node)
    return node


def _parse_yaml(text: str):
    """(the loaded document, key lines): composed once, bounded by _compose, then constructed from that node."""
    node = _compose(text)
    loader = yaml.SafeLoader("")
    try:
        return (loader.construct_document(node) if node is not None else None), _walk_lines(node)
    finally:
        loader.dispose()


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (e.g. ('tasks', 0, 'type')) to its 1-based line in the YAML text."""
    try:
        return _walk_lines(_compose(text))
    except yaml.YAMLError:
        return {}  # the loader reports it with its own line


def _walk_lines(root) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                loc = prefix + (key.value,)
                lines[loc] = key.start_mark.line + 1
                walk(value, loc)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[prefix + (i,)] = item.start_mark.line + 1
                walk(item, prefix + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _user_error(err: ValidationError, schema: type[BaseModel], raw: dict, path: Path, lines: dict) -> UserError:
    # A misspelt key also makes the real one "missing": the unknown key is the error worth naming.
    first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = tuple(first["loc"])
    key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    if first["type"] == "extra_forbidden":
        known = _known_keys(schema, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
        message = f"unknown key{hint}"
    else:
        message = "missing required key" if first["type"] == "missing" else first["msg"].removeprefix("Value error, ")
        if first["type"] != "missing" and "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {first['input']!r})"
    extra = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return UserError(message + extra, path=path, line=line, field=key or None)


def _known_keys(schema: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at `loc`, found by walking the schema along the location (list indexes skipped)."""
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = schema.model_fields[part].annotation
        schema = next((a for a in _leaf_types(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), schema)
    return list(schema.model_fields)


def _leaf_types(annotation: Any) -> list:
    """The plain types inside a type annotation: Optional[list[LoraConfig]] -> [LoraConfig, NoneType]."""
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [leaf for arg in args for leaf in _leaf_types(arg)]
