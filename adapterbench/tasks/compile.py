"""Compile a suite into real lm-eval tasks: one YAML and one normalized JSONL per task, plus a utils.py that points
lm-eval at our metric functions. `lm_eval --include_path DIR` runs the result unchanged. What differs by task type
(prompts, docs, metrics, hooks) comes from the type's declaration in adapterbench.task_types."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from adapterbench.atomic import atomic_dir
from adapterbench.config import SuiteConfig, TaskConfig, config_error
from adapterbench.datafiles.reading import holds_chat, read_records
from adapterbench.datafiles.writing import write_jsonl
from adapterbench.digest import text_sha256
from adapterbench.errors import UserError
from adapterbench.task_types import task_type
from adapterbench.task_types.yaml_tags import Function

TARGET_DELIMITER, FEWSHOT_DELIMITER = " ", "\n\n"  # lm-eval's defaults, which our task YAML keeps


def doc_hash(doc: dict) -> str:
    """Identifies an item's content, so paired comparisons can tell whether two sides saw the same items."""
    # A cluster says how items relate, not what they are: setting cluster_by keeps items paired with older runs.
    payload = json.dumps({k: v for k, v in doc.items() if k not in ("id", "cluster")}, sort_keys=True,
                         ensure_ascii=False)
    return text_sha256(payload, 16)


def _docs(task: TaskConfig, path: Path) -> list[dict]:
    kind = task_type(task.type)
    data_kind = "chat" if kind.reads_chat and holds_chat(path, task.fields) else kind.data_kind
    records = read_records(path, data_kind, fields=task.fields or None, labels=task.labels)
    docs = [kind.doc(task, record) for record in records]
    # group_by breaks scores down by a column's values; cluster_by makes items sharing one a unit of the tests
    # (an item without a value is a cluster of its own)
    for key, column, missing in (("group", task.group_by, "(none)"), ("cluster", task.cluster_by, None)):
        if not column:
            continue
        field = f"{key}_by"
        if not any(column in record for record in records):
            raise UserError(f"{field}: no record has a column {column!r}", path=path, field=field)
        for doc, record in zip(docs, records):
            value = record.get(column)
            doc[key] = missing if value in (None, "") else str(value)
    for doc in docs:
        doc["doc_hash"] = doc_hash(doc)
    return docs


def metric_names(task: TaskConfig) -> list[str]:
    """The metrics a task reports (as the store and training curves name them, after 'TASK/')."""
    return [m.name for m in task_type(task.type).metrics_of(task)]


def chat_context(turns: list[dict], system_prompt: str | None) -> list[dict]:
    """The turns a model is shown, the task's system prompt first unless the record brings its own system turn."""
    if system_prompt and turns[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *turns]
    return list(turns)


def plain_context(turns: list[dict]) -> str:
    """Turns as lm-eval writes a prompt without a chat template: the system text, then each earlier exchange as a
    labeled example (question, target delimiter, answer, few-shot delimiter), then the last question."""
    return "".join(TARGET_DELIMITER + turn["content"] + FEWSHOT_DELIMITER if turn["role"] == "assistant"
                   else turn["content"] for turn in turns)


def task_pairs(task: TaskConfig, path: str | Path) -> list[dict]:
    """A data file as this task asks it, to train on: per record {id, messages, target}, the turns the task shows
    the model (its doc_to_text as the user turn, after its system prompt) and the answer it scores right (its
    doc_to_target; for multiple choice, the right choice's text), rendered from the templates lm-eval scores with."""
    from lm_eval.utils import apply_template  # lm-eval's own Jinja environment, so whitespace comes out the same

    kind = task_type(task.type)
    fields = kind.prompt(task)
    if fields["output_type"] == "loglikelihood_rolling":
        raise UserError(f"task {task.name!r} scores perplexity and asks no question; train on its text with "
                        "format: text", field="data.task")
    if task.num_fewshot:
        raise UserError(f"task {task.name!r} puts {task.num_fewshot} drawn examples before each question; name a "
                        "zero-shot task", field="data.task")
    pairs = []
    for doc in _docs(task, Path(path)):
        turns = doc.get("messages") or [{"role": "user", "content": apply_template(fields["doc_to_text"], doc)}]
        if fields["output_type"] == "multiple_choice":  # doc_to_target names the answer's index, doc_to_choice the list
            target = doc[fields["doc_to_choice"].strip("{}")][doc[fields["doc_to_target"]]]
        else:
            target = apply_template(fields["doc_to_target"], doc)
        pairs.append({"id": doc["id"], "messages": chat_context(turns, task.system_prompt), "target": target})
    return pairs


def task_yaml(task: TaskConfig, test_file: Path, fewshot_file: Path | None, conversations: bool = False) -> dict:
    kind = task_type(task.type)
    files = {"test": str(test_file)}
    config = {"task": task.name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
              "test_split": "test", **kind.prompt(task)}
    if conversations:  # lm-eval's own task shows one user turn; this class shows the conversation's turns
        config = {"class": Function("utils.ChatGeneration"), **config}
    if fewshot_file is not None:
        files["train"] = str(fewshot_file)
        config.update(fewshot_split="train", num_fewshot=task.num_fewshot)
    if task.system_prompt:
        config["description"] = task.system_prompt
    if config["output_type"] == "generate_until":
        # Chat models end their turn with EOS, which lm-eval always adds as a stop sequence; plain prompts stop at a
        # blank line like lm-eval's own tasks.
        until = [] if task.chat_template else ["\n\n"]
        config["generation_kwargs"] = {"until": until, "max_gen_toks": task.max_new_tokens, "do_sample": False}
    hook = kind.process_results(task)
    if hook:
        config["process_results"] = Function(f"utils.{hook}")
    config["metric_list"] = [m.lm_eval_entry() for m in kind.metrics_of(task)]
    config["metadata"] = {"version": 1.0, "adapterbench_type": task.type, "chat_template": task.chat_template}
    return config


def _utils_source(suite: SuiteConfig, conversations: bool) -> str:
    hooks = [line for task in suite.tasks for line in task_type(task.type).utils(task)]
    lines = ['"""Metric hooks for these tasks; generated by adapterbench (needs it installed)."""',
             *(["from functools import partial", ""] if hooks else []),
             "from adapterbench.tasks.metrics import (bleu_corpus, f1_macro, f1_weighted, per_class,  # noqa: F401",
             "                                        process_classification_generate,",
             "                                        process_classification_loglikelihood, process_generation,",
             "                                        process_mc_generate)",
             *(["from adapterbench.tasks.conversation import ChatGeneration  # noqa: F401"] if conversations
               else []), "", *hooks]
    return "\n".join(lines) + "\n"


def build_suite(suite: SuiteConfig, out_dir: str | Path) -> list[dict]:
    """Write the suite's task dir (replacing an older build whole, so a failed build leaves the old one intact) and
    return one entry per task: name, type, yaml path, number of docs, chat_template."""
    out_dir = Path(out_dir).resolve()
    entries, any_conversations = [], False
    with atomic_dir(out_dir) as tmp:
        for index, task in enumerate(suite.tasks):
            docs = _docs(task, task.data)[:task.limit]
            write_jsonl(tmp / f"{task.name}.jsonl", docs)
            conversations = bool(docs) and "messages" in docs[0]
            any_conversations |= conversations
            if conversations and task.num_fewshot:  # the earlier turns are the context; there is no place for more
                raise config_error(suite, ("tasks", index, "num_fewshot"), "a task over conversations takes no "
                                   "few-shot examples")
            fewshot = None
            if task.num_fewshot:
                fewshot = out_dir / f"{task.name}_fewshot.jsonl"
                pool = _docs(task, task.fewshot_data)
                if task.num_fewshot > len(pool):  # lm-eval would fail mid-run drawing the examples
                    raise config_error(suite, ("tasks", index, "num_fewshot"),
                                       f"{task.num_fewshot} examples asked, but {task.fewshot_data} has "
                                       f"{len(pool)} item(s)")
                write_jsonl(tmp / fewshot.name, pool)
            config = task_yaml(task, out_dir / f"{task.name}.jsonl", fewshot, conversations)
            (tmp / f"{task.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
            entries.append({"name": task.name, "type": task.type, "yaml": str(out_dir / f"{task.name}.yaml"),
                            "docs": len(docs), "chat_template": task.chat_template,
                            "metrics": [m["metric"] for m in config["metric_list"]]})
        (tmp / "utils.py").write_text(_utils_source(suite, any_conversations))
    return entries
