"""Compile a suite into real lm-eval tasks: one YAML and one normalized JSONL per task, plus a utils.py that points
lm-eval at our metric functions. `lm_eval --include_path DIR` runs the result unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from adapterbench.atomic import atomic_dir
from adapterbench.config import SuiteConfig, TaskConfig, config_error, hook_name
from adapterbench.datafiles.reading import holds_chat, read_records
from adapterbench.datafiles.writing import write_jsonl
from adapterbench.errors import UserError
from adapterbench.tasks.metrics import is_english, label_slug

DATA_KIND = {"multiple_choice": "multiple_choice", "multiple_choice_generate": "multiple_choice",
             "perplexity": "text", "generation": "instruction", "classification": "classification"}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TARGET_DELIMITER, FEWSHOT_DELIMITER = " ", "\n\n"  # lm-eval's defaults, which our task YAML keeps
ROUGE_KEYS = [f"{kind}_{part}" for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum")
              for part in ("precision", "recall", "f1")]


class Function(str):
    """A YAML scalar written as `!function utils.NAME`, lm-eval's way to reference Python hooks."""


yaml.SafeDumper.add_representer(Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def doc_hash(doc: dict) -> str:
    """Identifies an item's content, so paired comparisons can tell whether two sides saw the same items."""
    # A cluster says how items relate, not what they are: setting cluster_by keeps items paired with older runs.
    payload = json.dumps({k: v for k, v in doc.items() if k not in ("id", "cluster")}, sort_keys=True,
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _data_kind(task: TaskConfig, path: Path) -> str:
    """The kind of record a task reads; a generation task also reads conversations."""
    if task.type == "generation" and holds_chat(path, task.fields):
        return "chat"
    return DATA_KIND[task.type]


def _chat_doc(record: dict) -> dict:
    """A conversation as a generation item: the turns before its last assistant turn are the context (the
    ChatGeneration task renders them), that turn is the reference; `prompt` is the last user turn, for display."""
    turns = record["messages"]
    last = max(i for i, turn in enumerate(turns) if turn["role"] == "assistant")
    return {"id": record["id"], "messages": turns[:last], "prompt": turns[last - 1]["content"],
            "reference": turns[last]["content"]}


def _docs(task: TaskConfig, path: Path) -> list[dict]:
    kind = _data_kind(task, path)
    records = read_records(path, kind, fields=task.fields or None, labels=task.labels)
    if task.type == "perplexity":
        docs = [{"id": r["id"], "text": r["text"]} for r in records]
    elif kind == "chat":
        docs = [_chat_doc(r) for r in records]
    elif task.type == "generation":
        docs = [{"id": r["id"], "prompt": r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""),
                 "reference": r["output"]} for r in records]
    elif task.type in ("multiple_choice", "multiple_choice_generate"):
        docs = [{"id": r["id"], "question": r["question"], "choices": r["choices"], "answer": r["answer"]}
                for r in records]
    else:
        verbalizers = [(task.verbalizers or {}).get(label, label) for label in task.labels]
        docs = [{"id": r["id"], "text": r["text"], "context": r["context"], "label": task.labels.index(r["label"]),
                 "labels": task.labels, "verbalizers": verbalizers} for r in records]
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


def _mean(metric: str) -> dict:
    return {"metric": metric, "aggregation": "mean", "higher_is_better": True}


def _metric_list(task: TaskConfig) -> list[dict]:
    if task.type == "multiple_choice":
        return [_mean("acc"), _mean("acc_norm")]
    if task.type == "perplexity":
        return [{"metric": metric, "aggregation": aggregation, "higher_is_better": False}
                for metric, aggregation in (("word_perplexity", "weighted_perplexity"),
                                            ("byte_perplexity", "weighted_perplexity"),
                                            ("bits_per_byte", "bits_per_byte"))]
    if task.type == "generation":
        return [{"metric": "bleu", "aggregation": Function("utils.bleu_corpus"), "higher_is_better": True},
                *map(_mean, ROUGE_KEYS)]
    if task.type == "multiple_choice_generate":
        return [_mean("acc"), {"metric": "unparseable_rate", "aggregation": "mean", "higher_is_better": False}]
    hook = hook_name(task.name)
    per_class = [{"metric": f"{m}_{label_slug(label)}", "higher_is_better": True,
                  "aggregation": Function(f"utils.{hook}_{m}_{label_slug(label)}")}
                 for label in task.labels for m in ("precision", "recall", "f1")]
    return [_mean("acc"), {"metric": "unparseable_rate", "aggregation": "mean", "higher_is_better": False},
            {"metric": "f1_macro", "aggregation": Function(f"utils.{hook}_f1_macro"), "higher_is_better": True},
            {"metric": "f1_weighted", "aggregation": Function(f"utils.{hook}_f1_weighted"),
             "higher_is_better": True},
            *per_class]


def metric_names(task: TaskConfig) -> list[str]:
    """The metrics a task reports (as the store and training curves name them, after 'TASK/')."""
    return [m["metric"] for m in _metric_list(task)]


CLASSIFICATION_PROMPT = ("{% if context %}Context: {{context}}\n{% endif %}Text: {{text}}\n"
                         "Label ({{ verbalizers | join(', ') }}):")


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

    if task.type == "perplexity":
        raise UserError(f"task {task.name!r} scores perplexity and asks no question; train on its text with "
                        "format: text", field="data.task")
    if task.num_fewshot:
        raise UserError(f"task {task.name!r} puts {task.num_fewshot} drawn examples before each question; name a "
                        "zero-shot task", field="data.task")
    fields = _prompt_fields(task)
    pairs = []
    for doc in _docs(task, Path(path)):
        turns = doc.get("messages") or [{"role": "user", "content": apply_template(fields["doc_to_text"], doc)}]
        if fields["output_type"] == "multiple_choice":  # doc_to_target names the answer's index, doc_to_choice the list
            target = doc[fields["doc_to_choice"].strip("{}")][doc[fields["doc_to_target"]]]
        else:
            target = apply_template(fields["doc_to_target"], doc)
        pairs.append({"id": doc["id"], "messages": chat_context(turns, task.system_prompt), "target": target})
    return pairs


def _prompt_fields(task: TaskConfig) -> dict:
    """doc_to_text / doc_to_target / doc_to_choice and the output type, as lm-eval Jinja templates."""
    letters = "{% for c in choices %}" + f"{{{{ '{LETTERS}'[loop.index0] }}}}" + ". {{ c }}\n{% endfor %}"
    if task.type == "multiple_choice":
        return {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
                "doc_to_choice": "{{choices}}", "doc_to_target": "answer"}
    if task.type == "multiple_choice_generate":
        return {"output_type": "generate_until",
                "doc_to_text": "Question: {{question}}\n" + letters + "Answer with the letter of the correct choice.\n",
                "doc_to_target": f"{{{{ '{LETTERS}'[answer] }}}}"}
    if task.type == "perplexity":
        return {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "text"}
    if task.type == "generation":
        return {"output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{reference}}"}
    text = CLASSIFICATION_PROMPT
    if task.method == "loglikelihood":
        return {"output_type": "multiple_choice", "doc_to_text": text, "doc_to_choice": "{{verbalizers}}",
                "doc_to_target": "label"}
    return {"output_type": "generate_until", "doc_to_text": text, "doc_to_target": "{{ verbalizers[label] }}"}


def task_yaml(task: TaskConfig, test_file: Path, fewshot_file: Path | None, conversations: bool = False) -> dict:
    files = {"test": str(test_file)}
    config = {"task": task.name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
              "test_split": "test", **_prompt_fields(task)}
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
    hooks = {"generation": "process_generation", "multiple_choice_generate": "process_mc_generate",
             "classification": f"process_classification_{'loglikelihood' if task.method == 'loglikelihood' else 'generate'}"}
    if task.type == "generation" and not is_english(task.language):
        hooks["generation"] = f"{hook_name(task.name)}_process_generation"  # ROUGE in the task's language
    if task.type in hooks:
        config["process_results"] = Function(f"utils.{hooks[task.type]}")
    config["metric_list"] = _metric_list(task)
    config["metadata"] = {"version": 1.0, "adapterbench_type": task.type, "chat_template": task.chat_template}
    return config


def _utils_source(suite: SuiteConfig, conversations: bool) -> str:
    partial_hooks = any(task.type == "classification" or (task.type == "generation" and not is_english(task.language))
                        for task in suite.tasks)
    lines = ['"""Metric hooks for these tasks; generated by adapterbench (needs it installed)."""',
             *(["from functools import partial", ""] if partial_hooks else []),
             "from adapterbench.tasks.metrics import (bleu_corpus, f1_macro, f1_weighted, per_class,  # noqa: F401",
             "                                        process_classification_generate,",
             "                                        process_classification_loglikelihood, process_generation,",
             "                                        process_mc_generate)",
             *(["from adapterbench.tasks.conversation import ChatGeneration  # noqa: F401"] if conversations
               else []), ""]
    for task in suite.tasks:
        if task.type == "classification":
            hook = hook_name(task.name)
            # macro F1 averages over the whole label list, also labels no item of this run carries
            lines.append(f"{hook}_f1_macro = partial(f1_macro, n_labels={len(task.labels)})")
            lines.append(f"{hook}_f1_weighted = partial(f1_weighted, n_labels={len(task.labels)})")
            for index, label in enumerate(task.labels):
                for metric in ("precision", "recall", "f1"):
                    lines.append(f'{hook}_{metric}_{label_slug(label)} = per_class("{metric}", {index})')
        elif task.type == "generation" and not is_english(task.language):
            lines.append(f"{hook_name(task.name)}_process_generation = partial(process_generation, "
                         f"language={task.language!r})")
    return "\n".join(lines) + "\n"


def build_suite(suite: SuiteConfig, out_dir: str | Path) -> list[dict]:
    """Write the suite's task dir (replacing an older build whole, so a failed build leaves the old one intact) and
    return one entry per task: name, type, yaml path, number of docs, chat_template."""
    out_dir = Path(out_dir).resolve()
    entries, any_conversations = [], False
    with atomic_dir(out_dir) as tmp:
        for index, task in enumerate(suite.tasks):
            docs = _docs(task, task.data)
            write_jsonl(tmp / f"{task.name}.jsonl", docs)
            conversations = bool(docs) and "messages" in docs[0]
            any_conversations |= conversations
            if conversations and task.num_fewshot:  # the earlier turns are the context; there is no place for more
                raise config_error(suite, ("tasks", index, "num_fewshot"), "a generation task over conversations "
                                   "takes no few-shot examples")
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
