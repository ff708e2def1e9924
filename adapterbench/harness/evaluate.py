"""evaluate(): load the base once, attach every adapter, score each model on every task of a suite through lm-eval,
and keep scores, per-sample records and lm-eval's results JSON in the store."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from pathlib import Path

from adapterbench.config import SuiteConfig, load_suite
from adapterbench.errors import UserError
from adapterbench.provenance import base_sha, environment
from adapterbench.record_types import Evaluation, ModelEntry, Sample, Score, SuiteRef

GENERATION_BATCH = 32  # decoding is memory-bound on a CPU: wider batches are nearly free per token


def parse_adapters(specs) -> dict[str, str]:
    """`PATH` or `LABEL=PATH` (repeatable) -> {label: path}; a bare path is labelled by its folder name (or the
    run folder's name when the path is a run's `adapter/` or `best/` dir)."""
    adapters: dict[str, str] = {}
    for spec in specs or ():
        label, sep, path = str(spec).partition("=")
        if not sep:
            path = label
            p = Path(path).resolve()
            label = f"{p.parent.name}/{p.name}" if p.name in ("adapter", "best") else p.name
        if label == "base":
            raise UserError("the label 'base' is reserved for the base model", field="--adapter")
        if label in adapters:
            raise UserError(f"two adapters share the label {label!r}; name them with LABEL=PATH", field="--adapter")
        adapters[label] = path
    return adapters


def load_session(base: str = "default", adapters: dict[str, str] | None = None, *, dtype: str = "auto",
                 quant: str = "auto", batch_size: int | str = "auto", allow_base_mismatch: bool = False,
                 allow_noop_adapter: bool = False, accelerator=None):
    """One base in memory; every adapter checked on it before anything is scored (it loads with PEFT, all its
    weights land, it changes the model's outputs unless `allow_noop_adapter`) and attached in turn by `lm.use`.
    Returns (lm, identities); `lm.quant` is the quantization the base was loaded with. An adapter trained on
    another base is refused unless `allow_base_mismatch`; its identity then says `base_mismatch`. With an
    `accelerator` of several processes, each loads the base on its own device and scores its share."""
    from adapterbench.adapters.identity import adapter_identity, check_trained_base
    from adapterbench.adapters.models import load_model, resolve_model
    from adapterbench.harness.lm import AdapterLM

    adapters = adapters or {}
    # every file check before the model is loaded: a broken or foreign adapter costs no loading time
    identities = {label: adapter_identity(path) for label, path in adapters.items()}
    base_path = resolve_model(base)
    base_identity = {"path": str(base_path), "sha256": base_sha(base_path), "base_name": base, "manifest": None}
    for label in check_trained_base(identities, base_identity["sha256"], allow_mismatch=allow_base_mismatch):
        identities[label]["base_mismatch"] = True
    quant = resolve_quant(quant, identities)
    device = str(accelerator.device) if accelerator is not None else None
    model, tokenizer = load_model(base, dtype=dtype, quant=quant, device=device)
    for label, path in adapters.items():
        check_adapter(model, tokenizer, path, identities[label], allow_noop=allow_noop_adapter)
    identities = {"base": base_identity, **identities}
    rows = GENERATION_BATCH if batch_size == "auto" else int(batch_size)
    lm = AdapterLM(model, tokenizer, adapters=adapters, batch_size=rows)
    if accelerator is not None:
        lm.share_work(accelerator)
    lm.quant = quant
    return lm, identities


def check_adapter(model, tokenizer, path: str, identity: dict, *, allow_noop: bool = False) -> None:
    """Attach the adapter once, as scoring will, and take it off again: refused in one line if PEFT cannot apply
    it or it leaves the base's outputs unchanged (users keep finding "my adapter scores exactly like the base")."""
    from adapterbench.adapters.attach import attached, changes_outputs

    with attached(model, path) as peft_model:
        noop = not changes_outputs(peft_model, tokenizer)
    if noop and not allow_noop:
        best_step = ((identity.get("manifest") or {}).get("best") or {}).get("step")
        why = ("it is the run's untrained step-0 adapter, which no later evaluation beat" if best_step == 0 else
               "zero LoRA B matrices, targets that match nothing, or weights that did not load")
        raise UserError(f"this adapter changes nothing: on a probe its outputs equal the base's bit for bit ({why}); "
                        "--allow-noop-adapter scores it anyway", path=path)


def model_entry(label: str, identity: dict) -> ModelEntry:
    """The evaluation's record of the model `label` of a session, from its identity (see load_session)."""
    return ModelEntry(label=label, role="base" if label == "base" else "adapter", path=identity["path"],
                      sha256=identity["sha256"], base_name=identity.get("base_name"),
                      manifest=identity.get("manifest"))


def base_mismatches(identities: dict[str, dict]) -> list[str]:
    """The labels scored on a base other than their training manifest's (--allow-base-mismatch), for the store."""
    return [label for label, identity in identities.items() if identity.get("base_mismatch")]


def check_base(base: str, dtype: str, quant: str) -> None:
    """The base and how to load it, checked before tasks compile or a model loads (a GGUF base is converted now,
    once, as loading would)."""
    from adapterbench.adapters.models import check_load_options, resolve_model

    check_load_options(dtype, quant, auto_quant=True)
    resolve_model(base)


def resolve_quant(quant: str, identities: dict[str, dict]) -> str:
    """'auto': load the base as the adapters were trained on it (the `quant` of their training manifests), so that
    `eval` gives the numbers the training run's own evaluations gave; 'none' for the base alone or adapters without
    a manifest."""
    if quant != "auto":
        return quant
    trained = {label: identity["manifest"]["config"]["quant"] for label, identity in identities.items()
               if (identity.get("manifest") or {}).get("config", {}).get("quant")}
    if len(set(trained.values())) > 1:
        listing = ", ".join(f"{label}: {kind}" for label, kind in trained.items())
        raise UserError(f"the adapters were trained on differently quantized bases ({listing}); choose how to load "
                        "the base for all of them with --quant none or --quant nf4", field="--quant")
    return next(iter(trained.values()), "none")


def load_tasks(suite: SuiteConfig, task_dir: str | Path, only: list[str] | None = None) -> list[tuple[bool, dict]]:
    """Compile the suite into `task_dir` and load each task with lm-eval's TaskManager: (wants the chat template,
    lm-eval task dict) per task. Each task is scored in its own lm-eval call, so its requests are batched alike
    whichever other tasks run with it (in bf16, a batch's make-up moves greedy answers)."""
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite

    entries = build_suite(suite, task_dir)
    if only:
        unknown = sorted(set(only) - {e["name"] for e in entries})
        if unknown:
            raise UserError(f"unknown task(s) {unknown}; the suite has {[e['name'] for e in entries]}", field="tasks")
        entries = [e for e in entries if e["name"] in only]
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return [(entry["chat_template"], manager.load([entry["name"]])) for entry in entries]


def score(lm, tasks: list[tuple[bool, dict]], label: str, *, limit: int | None = None) -> dict:
    """Score the model `label` of `lm` on every loaded task (see load_tasks): {"scores", "samples", "lm_eval",
    "lm_eval_samples"}, the last lm-eval's own per-sample log by task (what `--log_samples` writes).
    Under several processes each scores its share and only the main one gets results (the others: empty)."""
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    from lm_eval.defaults import DEFAULT_OTHER_SEED

    scores, samples, merged, logged = [], [], {}, {}
    with lm.use(label):
        for chat, task_dict in tasks:
            for task in task_dict["tasks"].values():
                # as lm-eval's simple_evaluate does; re-seeded per model, so every model sees the same few-shot
                # examples (the sampler's state otherwise advances from one evaluate() call to the next)
                task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
            use_chat = chat and bool(getattr(lm.tokenizer, "chat_template", None))
            result = lm_eval_evaluate(lm=lm, task_dict=task_dict, limit=limit, log_samples=True,
                                      apply_chat_template=use_chat, fewshot_as_multiturn=use_chat,
                                      bootstrap_iters=1000)
            if result is None:  # not the main process: lm-eval gathered our share there
                continue
            task_samples = _samples(label, result)
            scores += _with_bootstrap_stderr(_scores(label, result), task_samples, task_dict["tasks"])
            samples += task_samples
            logged.update(result.get("samples", {}))
            for key, value in result.items():
                if key == "samples":
                    continue
                if isinstance(value, dict):
                    merged.setdefault(key, {}).update(value)
                else:
                    merged[key] = value
    return {"scores": scores, "samples": samples, "lm_eval": merged, "lm_eval_samples": logged}


def _scores(label: str, result: dict) -> list[Score]:
    rows = []
    for task, metrics in result["results"].items():
        n = result.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in metrics.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{name}_stderr,{filter_name}")
            rows.append(Score(label=label, task=task, metric=name, value=float(value),
                              stderr=float(stderr) if isinstance(stderr, (int, float)) else None, n=n))
    return rows


def _with_bootstrap_stderr(scores: list[Score], samples: list[Sample], tasks: dict) -> list[Score]:
    """lm-eval gives a stderr only for mean-aggregated metrics; bootstrap the others from per-sample items with
    the task's own aggregation, so every reported value has an interval."""
    from adapterbench.harness.stats import bootstrap_stderr

    for row in scores:
        if row["stderr"] is not None or row["task"] not in tasks:
            continue
        aggregate = tasks[row["task"]].aggregation().get(row["metric"])
        items = [s["metrics"][row["metric"]] for s in samples
                 if s["task"] == row["task"] and row["metric"] in s["metrics"]]
        if aggregate is not None and items:
            row["stderr"] = bootstrap_stderr([tuple(i) if isinstance(i, list) else i for i in items], aggregate)
    return scores


def _samples(label: str, result: dict) -> list[Sample]:
    rows = []
    for task, logged in result.get("samples", {}).items():
        for sample in logged:
            doc = sample["doc"]
            rows.append(Sample(label=label, task=task, doc_id=str(doc.get("id", sample["doc_id"])),
                               doc_hash=doc.get("doc_hash", ""), prompt=_prompt(sample),
                               prediction=_prediction(sample, doc), reference=_reference_text(sample, doc),
                               group=doc.get("group"), cluster=doc.get("cluster"),
                               metrics={m: _jsonable(sample[m]) for m in sample.get("metrics", []) if m in sample}))
    return rows


def _prompt(sample: dict) -> str:
    args = sample["arguments"]
    first = args[0] if isinstance(args, (list, tuple)) else args
    if isinstance(first, dict):  # lm-eval >= 0.4.9 logs {"gen_args_0": {"arg_0": ...}}
        first = next(iter(first.values()))
        return str(next(iter(first.values()))) if isinstance(first, dict) else str(first)
    return str(first[0] if isinstance(first, (list, tuple)) else first)


def _prediction(sample: dict, doc: dict) -> str:
    responses = sample["filtered_resps"]
    if "choices" in doc or "verbalizers" in doc:
        options = doc.get("choices") or doc.get("verbalizers")
        if responses and isinstance(responses[0], (list, tuple)) and len(responses) == len(options):
            best = max(range(len(options)), key=lambda i: float(responses[i][0]))
            return options[best]
    if responses and isinstance(responses[0], (list, tuple)):
        return json.dumps([_jsonable(r) for r in responses])
    if isinstance(responses, (list, tuple)) and len(responses) == 1:
        return str(responses[0])
    return json.dumps(_jsonable(responses))


def _reference_text(sample: dict, doc: dict) -> str:
    """The item's expected answer as text: its reference, its correct choice or label, else lm-eval's target."""
    if "reference" in doc:
        return doc["reference"]
    if "choices" in doc:
        return doc["choices"][doc["answer"]]
    if "verbalizers" in doc:
        return doc["verbalizers"][doc["label"]]
    return doc.get("text", str(sample.get("target", "")))


def _jsonable(value):
    """Per-sample metric values as JSON: lm-eval gives floats, tuples (corpus-metric items) and numpy scalars."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def evaluate(suite: str | Path | SuiteConfig, *, base: str = "default", adapters=None, limit: int | None = None,
             batch_size: int | str = "auto", dtype: str = "auto", quant: str = "auto", tasks: list[str] | None = None,
             store: str | Path | None = None, save: bool = True, command: str | None = None,
             allow_base_mismatch: bool = False, allow_noop_adapter: bool = False) -> Evaluation | None:
    """Score `base` and each adapter on every task of `suite`. Returns the evaluation (the store's shape) with its
    id; with save=True it is written to the store in one transaction. `allow_base_mismatch` scores adapters trained
    on another base too; config.base_mismatch lists them. Under `torchrun --nproc_per_node N` or `accelerate
    launch` the processes share each task's documents; the main process alone gathers, saves and returns the
    evaluation, the others return None. Each model also carries lm-eval's own per-sample log (`lm_eval_samples`,
    for `--output-dir`), which the store does not keep."""
    from adapterbench.adapters.models import stay_offline
    from adapterbench.harness import database

    stay_offline()
    quiet_libraries()
    suite_path = None
    if not isinstance(suite, SuiteConfig):
        suite_path = Path(suite)
        suite = load_suite(suite_path)
    adapters = parse_adapters(adapters) if not isinstance(adapters, dict) else adapters
    if limit is not None and limit < 1:
        raise UserError(f"limit {limit} is not valid (expected a positive number of items per task)", field="--limit")
    if save:  # a store that cannot take the results is refused now, not after minutes of scoring
        database.check_store(store)
    check_base(base, dtype, quant)
    started = time.time()
    from adapterbench.atomic import scratch_dir

    with scratch_dir("adapterbench-tasks") as task_dir:
        loaded = load_tasks(suite, task_dir, tasks)  # data and task names are checked before the model loads
        accelerator = launched_processes()
        lm, identities = load_session(base, adapters, dtype=dtype, quant=quant, batch_size=batch_size,
                                      allow_base_mismatch=allow_base_mismatch, allow_noop_adapter=allow_noop_adapter,
                                      accelerator=accelerator)
        evaluation = Evaluation(
            id=database.new_evaluation_id(), created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
            suite=SuiteRef(name=suite.name, path=str(suite_path.resolve()) if suite_path else None),
            base_ref=base, command=command or " ".join(sys.argv),
            config={"limit": limit, "batch_size": batch_size, "dtype": dtype, "quant": lm.quant,
                    "model_dtype": str(lm.model.dtype).removeprefix("torch."), "tasks": tasks,
                    "base_mismatch": base_mismatches(identities), "allow_noop_adapter": allow_noop_adapter,
                    "processes": lm.world_size},
            environment=environment(), models=[], scores=[], samples=[])
        for label, identity in identities.items():
            result = score(lm, loaded, label, limit=limit)
            evaluation["models"].append(ModelEntry(**model_entry(label, identity), lm_eval=result["lm_eval"],
                                                   lm_eval_samples=result["lm_eval_samples"]))
            evaluation["scores"] += result["scores"]
            evaluation["samples"] += result["samples"]
    if lm.rank != 0:
        return None
    evaluation["config"]["seconds"] = round(time.time() - started, 2)
    if save:
        with database.connect(store) as conn:
            database.save_evaluation(conn, evaluation)
    return evaluation


def launched_processes():
    """The Accelerator of a run started by torchrun or accelerate launch (WORLD_SIZE > 1), else None: gloo between
    CPU processes, NCCL between GPUs, with a patient timeout (the main process checks and writes alone)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from datetime import timedelta

    import torch
    from accelerate import Accelerator, InitProcessGroupKwargs

    return Accelerator(cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))])


def quiet_libraries() -> None:
    """lm-eval warns that a pre-built model skips its loading options (intended here), and datasets draws a bar per
    split; our own progress bars say what is running."""
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def results_table(evaluation: dict) -> dict:
    """{label: {task: {metric: value}}}, the shape `adapterbench eval --json` prints."""
    table: dict = {}
    for row in evaluation["scores"]:
        table.setdefault(row["label"], {}).setdefault(row["task"], {})[row["metric"]] = row["value"]
    return table
