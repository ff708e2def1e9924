"""Bad input at every entry point, as a table: each case runs the CLI in-process and must exit 2 with one line on
stderr naming the file (and line and field where there is one), no traceback, and nothing written (the file tree
and the store's rows are compared before and after). Cases marked `model` need the tiny base loaded; every other
case must fail before any model loads (load_model is made to fail the test if it is called)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from adapterbench.cli import main
from adapterbench.harness import database

FIFO, DIR, LOOP = object(), object(), object()  # special files a case may ask for instead of content


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


QA = [{"id": f"q{i}", "instruction": f"What is item {i}?", "output": f"Item {i}."} for i in range(4)]
MC = [{"id": f"m{i}", "question": f"Pick {i}?", "choices": ["a", "b", "c"], "answer": i % 3} for i in range(4)]
TOPICS = [{"id": f"t{i}", "text": f"Sentence {i}.", "label": ["pos", "neg"][i % 2]} for i in range(4)]
NOTES = "# Notes\n\nLoRA learns a low-rank update of frozen weights.\n\nQuantization stores weights in four bits.\n"
SUITE = ("name: s\ntasks:\n  - {name: qa, type: generation, data: qa.jsonl}\n"
         "  - {name: mc, type: multiple_choice, data: mc.jsonl}\n")
GATE = "rules:\n  - {task: mc, metric: acc}\n"


def train_yaml(tiny: Path, extra: str = "") -> str:
    return (f"base_model: {tiny}\nquant: none\ndtype: fp32\ndata: {{format: instruction, train: qa.jsonl}}\n"
            f"max_steps: 1\nout: run\n{extra}")


def stored_evaluation() -> dict:
    samples = [{"label": label, "task": task, "doc_id": str(i), "doc_hash": f"h{i}", "prompt": f"Q{i}",
                "prediction": "a", "reference": "a", "metrics": {metric: 1.0}, "group": None}
               for label in ("base", "a1") for task, metric in (("mc", "acc"), ("qa", "rougeL_f1")) for i in range(3)]
    return {"id": "ev-20260101-000000-abcd", "suite": {"name": "s", "path": None}, "base_ref": "default",
            "config": {}, "command": "adapterbench eval", "environment": {}, "kind": "eval",
            "models": [{"label": label, "role": "base" if label == "base" else "adapter", "path": None,
                        "sha256": None, "base_name": None, "manifest": None, "lm_eval": None}
                       for label in ("base", "a1")],
            "scores": [{"label": label, "task": task, "metric": metric, "value": 1.0, "stderr": 0.0, "n": 3}
                       for label in ("base", "a1") for task, metric in (("mc", "acc"), ("qa", "rougeL_f1"))],
            "samples": samples}


@dataclass
class Case:
    id: str
    argv: list  # "{tiny}" is replaced by the tiny base's dir
    files: dict = field(default_factory=dict)  # name -> str | bytes | FIFO | DIR | LOOP | callable(path)
    file: Optional[str] = None  # the file the message must name (a suffix of the printed path)
    line: Optional[int] = None
    field: Optional[str] = None
    says: str = ""  # a fragment of the message
    model: bool = False  # needs the base loaded (the tiny model)


def foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()


def future_store(path: Path) -> None:
    with database.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, NULL)", (database.SCHEMA_VERSION + 1,))
    conn.close()


def malformed_store(path: Path) -> None:
    with database.connect(path) as conn:
        for i in range(60):
            database.save_evaluation(conn, {**stored_evaluation(), "id": f"ev-x-{i:03d}"})
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    raw = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(raw), 5):  # the schema's first page intact, the data pages scribbled over
        raw[offset] = 0xAB
    path.write_bytes(bytes(raw))


def bad_dir(config: dict | str, weights: bool = True) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        if weights:
            (path / "model.safetensors").write_bytes(b"\0" * 16)
    return make


LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
NAN_LINE = '{"instruction": "Say hi", "output": NaN}'
# nine levels of nine aliases each: 9**10 values once expanded; refused where it passes the bound (line 6)
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def one_task(extra: str = "", name: str = "qa", kind: str = "generation", data: str = "qa.jsonl") -> str:
    """A suite of one task written on line 3, with `extra` keys (YAML flow syntax) added to it."""
    return f"name: s\ntasks:\n  - {{name: {name}, type: {kind}, data: {data}{', ' + extra if extra else ''}}}\n"


def data_split(kind: str, name: str, content, *extra, **expect) -> Case:
    return Case(f"data-{kind}-{expect.pop('id')}", ["data", "split", name, "-k", kind, "--out", "split", *extra],
                {name: content}, file=expect.pop("file", name), **expect)


CASES = [
    # --- data files, read by `data split` (the reader every command shares) ----------------------------------------
    data_split("instruction", "qa.jsonl", jl(QA[0], '{"instruction": "x", "output": '), id="malformed-json",
               line=2, says="malformed JSON"),
    data_split("instruction", "qa.jsonl", jl(QA[0], "[1, 2]"), id="array-line", line=2, says="JSON object"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {"instruction": "x"}), id="missing-output", line=2,
               field="output", says="missing"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {"instruction": "x", "output": " "}), id="empty-output",
               line=2, field="output", says="empty"),
    data_split("instruction", "qa.jsonl", jl(QA[0], NAN_LINE), id="nan-output", line=2, field="output",
               says="number nan"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {"instruction": "x", "output": 42}), id="number-output",
               line=2, field="output", says="number 42"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {"instruction": "x", "output": ["a"]}), id="list-output",
               line=2, field="output", says="array"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {"instruction": True, "output": "a"}), id="bool-instruction",
               line=2, field="instruction", says="boolean"),
    data_split("instruction", "qa.jsonl", jl(*QA, {**QA[1]}), id="duplicate-id", line=5, field="id",
               says="duplicate id"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {**QA[1], "id": ""}), id="empty-id", line=2, field="id"),
    data_split("instruction", "qa.jsonl", jl(QA[0], {**QA[1], "id": {"a": 1}}), id="object-id", line=2,
               field="id"),
    data_split("instruction", "qa.jsonl", jl(QA[0]).encode() + '{"instruction": "caf\xe9", "output": "x"}\n'
               .encode("latin-1"), id="latin-1", line=2, says="not valid UTF-8"),
    data_split("instruction", "qa.jsonl", jl(QA[0]).encode() + b'{"instruction": "a\x00", "output": "x"}\n',
               id="nul-byte", line=2, says="NUL byte"),
    data_split("instruction", "qa.jsonl", "", id="empty-file", says="no records"),
    data_split("instruction", "qa.jsonl", "\n\n  \n", id="blank-lines", says="no records"),
    data_split("instruction", "qa.jsonl", FIFO, id="fifo", says="not a regular file"),
    data_split("instruction", "qa", DIR, id="folder", says="not supported"),
    data_split("instruction", "qa.xlsx", "x", id="extension", says="not supported"),
    data_split("instruction", "qa.jsonl", LOOP, id="symlink-loop", says="no such file"),
    Case("data-missing-file", ["data", "split", "none.jsonl", "-k", "instruction"], file="none.jsonl",
         says="no such file"),
    Case("data-under-a-file", ["data", "split", "notes.md/qa.jsonl", "-k", "instruction"], file="qa.jsonl",
         says="no such file"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "answer": 7}), id="answer-range", line=2,
               field="answer", says="out of range"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "answer": "E"}), id="answer-letter", line=2,
               field="answer", says="letter"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "answer": "zebra"}), id="answer-text", line=2,
               field="answer", says="unknown answer"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "choices": ["only"]}), id="one-choice",
               line=2, field="choices", says="at least 2"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "choices": ["a", "", "c"]}),
               id="empty-choice", line=2, field="choices[1]", says="empty choice"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "choices": "a,b"}), id="choices-string",
               line=2, field="choices", says="list of choices"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {"question": "q", "choices": ["a", "b"]}),
               id="answer-missing", line=2, field="answer", says="missing"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "answer": True}), id="answer-bool", line=2,
               field="answer", says="boolean"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {"choices": ["a", "b"], "answer": 0}),
               id="question-missing", line=2, field="question"),
    data_split("multiple_choice", "mc.jsonl", jl(MC[0], {**MC[1], "choices": [3, 4]}), id="number-choices",
               line=2, field="choices[0]", says="number 3"),
    data_split("classification", "t.jsonl", jl(TOPICS[0], {"text": "x", "label": "meh"}), "--labels", "pos,neg",
               id="unknown-label", line=2, field="label", says="unknown label"),
    data_split("classification", "t.jsonl", jl(TOPICS[0], {"text": "x", "label": 5}), "--labels", "pos,neg",
               id="label-index", line=2, field="label", says="out of range"),
    data_split("classification", "t.jsonl", jl({"text": "x", "label": 1}), id="index-without-labels", line=1,
               field="label", says="needs a label list"),
    data_split("classification", "t.jsonl", jl(TOPICS[0], {"label": "pos"}), id="text-missing", line=2,
               field="text"),
    Case("data-classification-empty-labels", ["data", "split", "t.jsonl", "-k", "classification", "--labels", ","],
         {"t.jsonl": jl(*TOPICS)}, says="empty or repeated"),
    Case("data-classification-repeated-labels", ["data", "split", "t.jsonl", "-k", "classification", "--labels",
                                                 "pos,pos"], {"t.jsonl": jl(*TOPICS)}, says="empty or repeated"),
    data_split("classification", "t.jsonl", jl(TOPICS[0], {**TOPICS[1], "context": {"a": 1}}),
               id="context-object", line=2, field="context", says="object"),
    data_split("text", "n.jsonl", jl({"text": "a"}, {"body": "b"}), id="jsonl-missing-text", line=2,
               field="text"),
    data_split("text", "n.jsonl", jl({"text": "a"}, '{"text": NaN}'), id="jsonl-nan-text", line=2, field="text",
               says="number nan"),
    data_split("text", "n.md", "# T\n\ncaf\xe9 au lait\n".encode("latin-1"), id="md-latin-1", line=3,
               says="not valid UTF-8"),
    data_split("text", "n.md", b"# T\n\nnul \x00 here\n", id="md-nul", line=3, says="NUL byte"),
    data_split("text", "n.md", FIFO, id="md-fifo", says="not a regular file"),
    data_split("text", "n.md", "# Only a heading\n\n```\ncode\n```\n", id="md-markup-only", says="no records"),
    Case("data-text-empty-folder", ["data", "split", "notes", "-k", "text"], {"notes": DIR, "notes/a.py": "x"},
         file="notes", says="no .md or .txt files"),
    data_split("instruction", "qa.csv", "instruction,answer\nx,y\n", id="csv-missing-column", line=1,
               field="output", says="missing column"),
    data_split("instruction", "qa.csv", "instruction,output,output\nx,y,z\n", id="csv-duplicate-column", line=1,
               says="appears twice"),
    data_split("instruction", "qa.csv", "instruction,output\nx,y\na,b,c\n", id="csv-too-many-cells", line=3,
               says="3 cells for 2 columns"),
    data_split("instruction", "qa.csv", b"instruction,output\nx,y\na,b\x00c\n", id="csv-nul", line=3,
               says="NUL byte"),
    data_split("instruction", "qa.csv", "instruction,output\ncaf\xe9,y\n".encode("cp1252"), id="csv-cp1252",
               line=2, says="not valid UTF-8"),
    data_split("instruction", "qa.csv", "instruction,output\nx,\n", id="csv-empty-cell", line=2, field="output",
               says="empty"),
    data_split("instruction", "qa.tsv", "instruction\tanswer\nx\ty\n", id="tsv-missing-column", line=1,
               field="output"),
    data_split("multiple_choice", "mc.csv", "question,A,B,answer\nq,a,b,C\n", id="csv-answer-letter", line=2,
               field="answer", says="letter"),
    data_split("classification", "t.csv", "text,label\nx,meh\n", "--labels", "pos,neg", id="csv-unknown-label",
               line=2, field="label"),
    # --- data command options --------------------------------------------------------------------------------------
    Case("data-unknown-kind", ["data", "split", "qa.jsonl", "-k", "qa"], says="unknown kind"),
    Case("data-unknown-field", ["data", "split", "qa.jsonl", "-k", "instruction", "--field", "answer=out"],
         says="unknown field"),
    Case("data-field-without-equals", ["data", "split", "qa.jsonl", "-k", "instruction", "--field", "output"],
         field="--field", says="CANONICAL=COLUMN"),
    Case("data-ratios-sum", ["data", "split", "qa.jsonl", "-k", "instruction", "--ratios", "0.5,0.4"],
         says="summing to 1"),
    Case("data-ratios-zero", ["data", "split", "qa.jsonl", "-k", "instruction", "--ratios", "1,0,0"],
         says="summing to 1"),
    Case("data-ratios-text", ["data", "split", "qa.jsonl", "-k", "instruction", "--ratios", "most,rest"],
         says="not valid"),
    Case("data-ngram-zero", ["data", "split", "qa.jsonl", "-k", "instruction", "--ngram", "0"], says="ngram 0"),
    Case("data-bad-name", ["data", "split", "qa.jsonl", "-k", "instruction", "--name", "../x"], says="name"),
    Case("data-out-is-a-file", ["data", "split", "qa.jsonl", "-k", "instruction", "--out", "notes.md"],
         file="notes.md", says="not a folder"),
    Case("data-out-under-a-file", ["data", "split", "qa.jsonl", "-k", "instruction", "--out", "notes.md/x"],
         file="x", says="is a file"),
    Case("data-too-few-records", ["data", "split", "one.jsonl", "-k", "instruction", "--ratios", "0.5,0.25,0.25"],
         {"one.jsonl": jl(QA[0], QA[1])}, says="cannot fill 3 parts"),
    Case("data-seed-not-a-number", ["data", "split", "qa.jsonl", "-k", "instruction", "--seed", "abc"],
         says="Invalid value for '--seed'"),
    Case("data-kind-missing", ["data", "split", "qa.jsonl"], says="Missing option '--kind'"),
    Case("data-check-unknown-kind", ["data", "check", "qa.jsonl", "-k", "mcq"], says="unknown kind"),
    Case("data-check-bad-labels", ["data", "check", "t.jsonl", "-k", "classification", "--labels", "a,a"],
         {"t.jsonl": jl(*TOPICS)}, says="empty or repeated"),
    Case("unknown-command", ["evall"], says="No such command"),
    # --- suite.yaml (through `tasks list`, which compiles it without a model) ---------------------------------------
    *[Case(f"suite-{name}", ["tasks", "list", "bad.yaml"], {"bad.yaml": text, **extra}, file="bad.yaml", line=line,
           field=fld, says=says) for name, text, line, fld, says, extra in [
        ("invalid-yaml", "name: s\ntasks:\n  - name: qa\n   type: generation\n", 4, None, "invalid YAML", {}),
        ("tab-indent", "name: s\ntasks:\n\t- {name: qa}\n", 3, None, "invalid YAML", {}),
        ("alias-bomb", BOMB + SUITE, 6, None, "aliases", {}),
        ("recursive-alias", "name: s\ntasks: &t [*t]\n", 2, None, "alias refers to a node it is in", {}),
        ("top-level-list", "- name: s\n", None, None, "mapping", {}),
        ("empty", "", None, None, "mapping", {}),
        ("unknown-key", SUITE + "taks: []\n", 5, "taks", "did you mean 'tasks'", {}),
        ("missing-name", one_task().replace("name: s\n", ""), None, "name", "missing", {}),
        ("bad-name", one_task().replace("name: s", "name: my suite"), 1, "name", "pattern", {}),
        ("no-tasks", "name: s\ntasks: []\n", 2, "tasks", "at least 1", {}),
        ("tasks-mapping", "name: s\ntasks: {qa: {type: generation}}\n", 2, "tasks", "list", {}),
        ("unknown-type", one_task(kind="summarize"), 3, "tasks[0].type", "generation", {}),
        ("missing-data", one_task().replace(", data: qa.jsonl", ""), 3, "tasks[0].data", "missing", {}),
        ("limit-zero", one_task("limit: 0"), 3, "tasks[0].limit", "greater than 0", {}),
        ("limit-negative", one_task("limit: -5"), 3, "tasks[0].limit", "greater than 0", {}),
        ("max-new-tokens-zero", one_task("max_new_tokens: 0"), 3, "tasks[0].max_new_tokens", "greater than 0", {}),
        ("fewshot-negative", one_task("num_fewshot: -1"), 3, "tasks[0].num_fewshot", "greater than or equal", {}),
        ("fewshot-without-data", one_task("num_fewshot: 2"), 3, "tasks[0]", "fewshot_data", {}),
        ("fewshot-beyond-pool", "name: s\ntasks:\n  - name: qa\n    type: generation\n    data: qa.jsonl\n"
         "    fewshot_data: two.jsonl\n    num_fewshot: 5\n", 7, "tasks[0].num_fewshot", "has 2 item(s)",
         {"two.jsonl": jl(*QA[:2])}),
        ("classification-without-labels", one_task("", "t", "classification", "t.jsonl"), 3, "tasks[0]",
         "needs 'labels'", {}),
        ("label-slug-clash", one_task("labels: [a b, a-b]", "t", "classification", "t.jsonl"), 3, "tasks[0]",
         "same metric name", {}),
        ("verbalizer-unknown-label", one_task("labels: [pos, neg], verbalizers: {neutral: meh}", "t",
                                              "classification", "t.jsonl"), 3, "tasks[0]", "verbalizers", {}),
        ("duplicate-task", SUITE.replace("name: mc, type: multiple_choice, data: mc", "name: qa, type: generation, "
                                         "data: qa"), None, None, "unique", {}),
        ("hook-name-clash", SUITE.replace("name: qa", "name: my-qa").replace("name: mc", "name: my_qa"), None, None,
         "differ only in '-'", {}),
        ("unknown-method", one_task("labels: [pos, neg], method: vote", "t", "classification", "t.jsonl"), 3,
         "tasks[0].method", "generate", {}),
        ("chat-template-not-bool", one_task("chat_template: maybe"), 3, "tasks[0].chat_template", "boolean", {}),
        ("fields-list", one_task("fields: [a]"), 3, "tasks[0].fields", "dictionary", {}),
        ("labels-string", one_task("labels: pos", "t", "classification", "t.jsonl"), 3, "tasks[0].labels", "list",
         {}),
        ("system-prompt-number", one_task("system_prompt: 5"), 3, "tasks[0].system_prompt", "string", {}),
        ("not-utf8", "name: caf\xe9\ntasks: []\n".encode("latin-1"), None, None, "not UTF-8", {}),
    ]],
    Case("suite-group-by-unknown-column", ["tasks", "list", "bad.yaml"], {"bad.yaml": one_task("group_by: mode")},
         file="qa.jsonl", field="group_by", says="no record has a column"),
    Case("suite-data-not-found", ["tasks", "list", "bad.yaml"], {"bad.yaml": one_task(data="nowhere.jsonl")},
         file="nowhere.jsonl", says="no such file"),
    Case("suite-data-bad-record", ["tasks", "list", "bad.yaml"],
         {"bad.yaml": one_task(data="broken.jsonl"), "broken.jsonl": jl(QA[0], NAN_LINE)}, file="broken.jsonl",
         line=2, field="output", says="number nan"),
    Case("suite-is-a-folder", ["tasks", "list", "conf"], {"conf": DIR}, file="conf", says="a folder"),
    Case("suite-is-a-fifo", ["tasks", "list", "s.yaml"], {"s.yaml": FIFO}, file="s.yaml",
         says="not a regular file"),
    Case("suite-not-found", ["tasks", "list", "none.yaml"], file="none.yaml", says="not found"),
    Case("tasks-build-out-is-a-file", ["tasks", "build", "suite.yaml", "--out", "notes.md"], file="notes.md",
         field="--out", says="not a folder"),
    Case("tasks-build-out-under-a-file", ["tasks", "build", "suite.yaml", "--out", "notes.md/t"], file="t",
         field="--out", says="is a file"),
    # --- eval: options, base dirs, store and export destinations (all before any model loads) -----------------------
    Case("eval-limit-zero", ["eval", "suite.yaml", "--base", "{tiny}", "--limit", "0"], field="--limit",
         says="limit 0"),
    Case("eval-limit-negative", ["eval", "suite.yaml", "--base", "{tiny}", "--limit", "-3"], field="--limit",
         says="limit -3"),
    Case("eval-limit-text", ["eval", "suite.yaml", "--limit", "abc"], says="Invalid value for '--limit'"),
    Case("eval-unknown-task", ["eval", "suite.yaml", "--base", "{tiny}", "--tasks", "qa,quiz"], field="tasks",
         says="quiz"),
    Case("eval-batch-size-text", ["eval", "suite.yaml", "--batch-size", "many"], says="--batch-size"),
    Case("eval-unknown-dtype", ["eval", "suite.yaml", "--base", "{tiny}", "--dtype", "fp8"], field="dtype",
         says="fp8"),
    Case("eval-unknown-quant", ["eval", "suite.yaml", "--base", "{tiny}", "--quant", "int3"], field="quant",
         says="int3"),
    Case("eval-base-missing", ["eval", "suite.yaml", "--base", "nowhere"], says="model not found"),
    Case("eval-base-text-file", ["eval", "suite.yaml", "--base", "notes.md"], file="notes.md",
         says="expected a model dir"),
    Case("eval-base-fake-gguf", ["eval", "suite.yaml", "--base", "fake.gguf"], {"fake.gguf": "not a model\n"},
         file="fake.gguf", says="not a GGUF file"),
    Case("eval-base-gguf-is-a-folder", ["eval", "suite.yaml", "--base", "m.gguf"], {"m.gguf": DIR},
         file="m.gguf", says="a folder"),
    Case("eval-base-config-not-json", ["eval", "suite.yaml", "--base", "b"], {"b": bad_dir('{"model_type": "lla')},
         file="config.json", line=1, says="not valid JSON"),
    Case("eval-base-config-list", ["eval", "suite.yaml", "--base", "b"], {"b": bad_dir("[1]")},
         file="config.json", says="JSON object"),
    Case("eval-base-custom-code", ["eval", "suite.yaml", "--base", "b"],
         {"b": bad_dir({**LLAMA, "auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}})},
         file="config.json", field="auto_map", says="its own Python code"),
    Case("eval-base-unknown-model-type", ["eval", "suite.yaml", "--base", "b"],
         {"b": bad_dir({"model_type": "brainwave"})}, file="config.json", field="model_type", says="brainwave"),
    Case("eval-base-no-weights", ["eval", "suite.yaml", "--base", "b"], {"b": bad_dir(LLAMA, weights=False)},
         file="b", says="no weights"),
    Case("eval-base-no-config", ["eval", "suite.yaml", "--base", "b"], {"b": DIR}, file="b", says="no config.json"),
    Case("eval-base-hub-id-offline", ["eval", "suite.yaml", "--base", "org/model"], says="ADAPTERBENCH_ALLOW_NETWORK"),
    Case("eval-adapter-missing", ["eval", "suite.yaml", "--base", "{tiny}", "--adapter", "gone"], file="gone",
         says="adapter"),
    Case("eval-adapter-label-base", ["eval", "suite.yaml", "--adapter", "base=x"], field="--adapter",
         says="reserved"),
    Case("eval-adapter-label-twice", ["eval", "suite.yaml", "--adapter", "a=x", "--adapter", "a=y"],
         field="--adapter", says="share the label"),
    *[Case(f"eval-store-{name}", ["eval", "suite.yaml", "--base", "{tiny}", "--store", target], files,
           file=target.split("/")[-1], field="--store", says=says) for name, target, files, says in [
        ("folder", "st", {"st": DIR}, "is a folder"),
        ("text-file", "notes.md", {}, "not an SQLite file"),
        ("foreign-sqlite", "contacts.db", {"contacts.db": foreign_sqlite}, "another program"),
        ("future-schema", "future.sqlite", {"future.sqlite": future_store}, "newer than this adapterbench"),
        ("malformed", "broken.sqlite", {"broken.sqlite": malformed_store}, "damaged"),
        ("under-a-file", "notes.md/s.sqlite", {}, "is a file"),
        ("symlink-loop", "loop.sqlite", {"loop.sqlite": LOOP}, "symbolic links"),
        ("fifo", "pipe.sqlite", {"pipe.sqlite": FIFO}, "not a regular file"),
    ]],
    Case("eval-predictions-csv-folder", ["eval", "suite.yaml", "--predictions-csv", "out"], {"out": DIR},
         file="out", field="--predictions-csv", says="is a folder"),
    Case("eval-predictions-csv-under-a-file", ["eval", "suite.yaml", "--predictions-csv", "notes.md/p.csv"],
         file="p.csv", field="--predictions-csv", says="is a file"),
    Case("eval-output-dir-file", ["eval", "suite.yaml", "--output-dir", "notes.md"], file="notes.md",
         field="--output-dir", says="not a folder"),
    Case("eval-output-dir-under-a-file", ["eval", "suite.yaml", "--output-dir", "notes.md/r"], file="r",
         field="--output-dir", says="is a file"),
    Case("eval-report-to-unknown", ["eval", "suite.yaml", "--report-to", "tensorbord"], field="--report-to",
         says="'tensorbord' is not a tracker accelerate knows; choose from all, aim, tensorboard"),
    Case("eval-report-to-not-installed", ["eval", "suite.yaml", "--report-to", "tensorboard,wandb", "--log-dir", "l"],
         field="--report-to", says="'wandb' is not installed (pip install wandb)"),
    Case("eval-report-to-without-log-dir", ["eval", "suite.yaml", "--report-to", "tensorboard"], field="--log-dir",
         says="tensorboard writes files: name their folder with --log-dir DIR"),
    Case("eval-log-dir-without-report-to", ["eval", "suite.yaml", "--log-dir", "l"], file="l", field="--log-dir",
         says="name them with --report-to"),
    Case("eval-log-dir-file", ["eval", "suite.yaml", "--report-to", "tensorboard", "--log-dir", "notes.md"],
         file="notes.md", field="--log-dir", says="not a folder"),
    Case("eval-suite-invalid", ["eval", "bad.yaml"], {"bad.yaml": "name: [\n"}, file="bad.yaml",
         says="invalid YAML"),
    # --- generate: prompts files and destinations --------------------------------------------------------------------
    *[Case(f"generate-prompts-{name}", ["generate", "--prompts", fname, "--base", "{tiny}"], {fname: content},
           file=fname, line=line, field=fld, says=says) for name, fname, content, line, fld, says in [
        ("latin-1", "p.txt", "caf\xe9?\n".encode("latin-1"), 1, None, "not valid UTF-8"),
        ("fifo", "p.txt", FIFO, None, None, "not a regular file"),
        ("extension", "p.docx", "x", None, None, "not supported"),
        ("empty", "p.txt", "\n\n", None, None, "no prompts"),
        ("jsonl-no-prompt", "p.jsonl", jl({"prompt": "hi"}, {"question": "x"}), 2, "prompt", "no prompt"),
        ("jsonl-prompt-number", "p.jsonl", jl({"prompt": 7}), 1, "prompt", "number 7"),
        ("jsonl-reference-nan", "p.jsonl", jl('{"prompt": "hi", "reference": NaN}'), 1, "reference", "number nan"),
        ("jsonl-malformed", "p.jsonl", jl({"prompt": "hi"}, "{oops"), 2, None, "malformed JSON"),
        ("csv-nul", "p.csv", b"prompt\nhi\x00there\n", 2, None, "NUL byte"),
        ("csv-no-prompt-column", "p.csv", "question\nhi\n", 2, "prompt", "no prompt"),
    ]],
    Case("generate-prompts-missing", ["generate", "--prompts", "none.txt"], file="none.txt", says="not found"),
    Case("generate-store-folder", ["generate", "--prompts", "p.txt", "--base", "{tiny}", "--store", "st"],
         {"p.txt": "hi\n", "st": DIR}, file="st", field="--store", says="is a folder"),
    Case("generate-store-foreign", ["generate", "--prompts", "p.txt", "--base", "{tiny}", "--store", "c.db"],
         {"p.txt": "hi\n", "c.db": foreign_sqlite}, file="c.db", field="--store", says="another program"),
    Case("generate-predictions-csv-folder", ["generate", "--prompts", "p.txt", "--predictions-csv", "out"],
         {"p.txt": "hi\n", "out": DIR}, file="out", field="--predictions-csv", says="is a folder"),
    Case("generate-max-new-tokens-zero", ["generate", "--prompts", "p.txt", "--base", "{tiny}", "--max-new-tokens",
                                          "0"], field="--max-new-tokens", says="max_new_tokens 0"),
    Case("generate-base-fake-gguf", ["generate", "--prompts", "p.txt", "--base", "x.gguf"], {"x.gguf": "text"},
         file="x.gguf", says="not a GGUF file"),
    # --- chat (refused before the model loads and before it reads a line) -------------------------------------------
    Case("chat-max-new-tokens-zero", ["chat", "--base", "{tiny}", "--max-new-tokens", "0"], field="--max-new-tokens",
         says="positive number of tokens"),
    Case("chat-negative-temperature", ["chat", "--base", "{tiny}", "--temperature", "-1"], field="--temperature",
         says="not valid"),
    Case("chat-unknown-use", ["chat", "--base", "{tiny}", "--use", "qa"], field="--use", says="no model 'qa'"),
    Case("chat-base-custom-code", ["chat", "--base", "b"], {"b": bad_dir({**LLAMA, "auto_map": {"x": "y.Z"}})},
         file="config.json", field="auto_map", says="its own Python code"),
    Case("chat-unknown-dtype", ["chat", "--base", "{tiny}", "--dtype", "int8"], field="dtype", says="int8"),
    # --- train.yaml and train's destinations --------------------------------------------------------------------------
    *[Case(f"train-{name}", ["train", "t.yaml", *overrides], {"t.yaml": text, **extra},
           file="t.yaml" if fname is None else fname or None,
           line=line, field=fld, says=says) for name, text, overrides, extra, fname, line, fld, says in [
        ("invalid-yaml", "data: {format: text\n", [], {}, None, 2, None, "invalid YAML"),
        ("alias-bomb", BOMB, [], {}, None, 6, None, "aliases"),
        ("unknown-key", "{tiny_yaml}lora: {rank: 8}\n", [], {}, None, 7, "lora.rank", "unknown key; known keys: r,"),
        ("missing-data", "max_steps: 1\n", [], {}, None, None, "data", "missing"),
        ("unknown-format", "data: {format: dialogue, train: qa.jsonl}\nmax_steps: 1\n", [], {}, None, 1,
         "data.format", "text", ),
        ("lr-negative", "{tiny_yaml}lr: -0.1\n", [], {}, None, 7, "lr", "greater than 0"),
        ("dropout-one", "{tiny_yaml}lora: {dropout: 1.0}\n", [], {}, None, 7, "lora.dropout", "less than 1"),
        ("steps-and-epochs", "{tiny_yaml}epochs: 2\n", [], {}, None, None, None, "exactly one"),
        ("seed-negative", "{tiny_yaml}seed: -1\n", [], {}, None, 7, "seed", "greater than or equal to 0"),
        ("seed-beyond-numpy", "{tiny_yaml}seed: 4294967296\n", [], {}, None, 7, "seed", "less than 4294967296"),
        ("max-length-tiny", "{tiny_yaml}max_length: 8\n", [], {}, None, 7, "max_length", "greater than 8"),
        ("keep-zero", "{tiny_yaml}checkpoint: {keep: 0}\n", [], {}, None, 7, "checkpoint.keep", "greater than"),
        ("quant-unknown", "{tiny_yaml}", ["quant=int2"], {}, None, 2, "quant", "nf4"),
        ("eval-limit-zero", "{tiny_yaml}eval: {every: 1, limit: 0}\n", [], {}, None, 7, "eval.limit",
         "greater than 0"),
        ("override-without-equals", "{tiny_yaml}", ["max_steps"], {}, "", None, None, "KEY=VALUE"),
        ("override-into-a-value", "{tiny_yaml}", ["max_steps.x=1"], {}, "", None, None, "not a section"),
        ("override-unknown-key", "{tiny_yaml}", ["lora.rnk=2"], {}, None, None, "lora.rnk", "unknown key"),
        ("override-invalid-yaml", "{tiny_yaml}", ["lora.target_modules=[q_proj"], {}, "", None, None,
         "invalid YAML value"),
        ("train-data-missing", "data: {format: instruction, train: nowhere.jsonl}\nmax_steps: 1\nout: run\n", [],
         {}, "nowhere.jsonl", None, None, "no such file"),
        ("train-data-nan", "data: {format: instruction, train: d.jsonl}\nmax_steps: 1\nout: run\n", [],
         {"d.jsonl": jl(QA[0], NAN_LINE)}, "d.jsonl", 2, "output", "number nan"),
        ("train-data-fifo", "data: {format: instruction, train: d.jsonl}\nmax_steps: 1\nout: run\n", [],
         {"d.jsonl": FIFO}, "d.jsonl", None, None, "not a regular file"),
        ("out-is-a-file", "data: {format: instruction, train: qa.jsonl}\nmax_steps: 1\nout: notes.md\n", [], {},
         "notes.md", None, "out", "not a folder"),
        ("out-under-a-file", "data: {format: instruction, train: qa.jsonl}\nmax_steps: 1\nout: notes.md/run\n", [],
         {}, "run", None, "out", "is a file"),
        ("early-stopping-unmeasured", "{tiny_yaml}eval: {every: 1, suite: suite.yaml}\n"
         "early_stopping: {metric: qa/accuracy}\n", [], {}, None, 8, "early_stopping.metric", "never measured"),
        ("early-stopping-without-eval", "{tiny_yaml}early_stopping: {metric: val_loss}\n", [], {}, None, 7,
         "early_stopping.metric", "no evaluation"),
        ("eval-unknown-task", "{tiny_yaml}eval: {every: 1, suite: suite.yaml, tasks: [quiz]}\n", [], {}, None, 7,
         "eval.tasks", "quiz"),
        ("eval-suite-invalid", "{tiny_yaml}eval: {every: 1, suite: bad.yaml}\n", [], {"bad.yaml": "name: [\n"},
         "bad.yaml", None, None, "invalid YAML"),
        ("eval-suite-data-nan", "{tiny_yaml}eval: {every: 1, suite: s2.yaml}\n", [],
         {"s2.yaml": "name: s2\ntasks:\n  - {name: qa, type: generation, data: d.jsonl}\n",
          "d.jsonl": jl(QA[0], NAN_LINE)}, "d.jsonl", 2, "output", "number nan"),
        ("store-foreign", "{tiny_yaml}eval: {every: 1, suite: suite.yaml}\n", ["--store", "c.db"],
         {"c.db": foreign_sqlite}, "c.db", None, "--store", "another program"),
        ("target-modules-match-nothing", "{tiny_yaml}lora: {target_modules: [qkv_proj]}\n", [], {}, None, 7,
         "lora.target_modules", "match no module"),
        ("layers-beyond-depth", "{tiny_yaml}lora: {target_modules: [q_proj], layers: [0, 30]}\n", [], {}, None, 7,
         "lora.layers", "this base has 2 layers"),
        ("layers-negative", "{tiny_yaml}lora: {target_modules: [q_proj], layers: [-1]}\n", [], {}, None, 7,
         "lora.layers", "do not exist"),
        ("report-to-unknown", "{tiny_yaml}report_to: [tensorbord]\n", [], {}, None, 7, "report_to[0]",
         "not a tracker accelerate knows"),
        ("report-to-not-installed", "{tiny_yaml}report_to: [tensorboard, wandb]\n", [], {}, None, 7, "report_to[1]",
         "not installed (pip install wandb)"),
        ("report-to-a-name", "{tiny_yaml}report_to: tensorboard\n", [], {}, None, 7, "report_to",
         "valid list"),
    ]],
    Case("train-base-custom-code", ["train", "t.yaml"],
         {"t.yaml": "base_model: b\ndata: {format: instruction, train: qa.jsonl}\nmax_steps: 1\n",
          "b": bad_dir({**LLAMA, "auto_map": {"AutoModelForCausalLM": "x.Y"}})}, file="config.json", field="auto_map",
         says="its own Python code"),
    Case("train-config-missing", ["train", "none.yaml"], file="none.yaml", says="not found"),
    # --- gate: rules files, refs and destinations ---------------------------------------------------------------------
    *[Case(f"gate-rules-{name}", ["gate", "-b", "base", "-c", "a1", "--rules", "g.yaml"], {"g.yaml": text},
           file="g.yaml", line=line, field=fld, says=says) for name, text, line, fld, says in [
        ("invalid-yaml", "rules:\n  - {task: mc\n", 3, None, "invalid YAML"),
        ("unknown-key", "alpha: 0.05\nrulez: []\n", 2, "rulez", "did you mean 'rules'"),
        ("max-drop-negative-share", "rules:\n  - {task: mc, max_drop: '-5%'}\n", 2, "rules[0].max_drop",
         "never negative"),
        ("max-drop-text", "max_drop: lots\n", 1, "max_drop", "max_drop is a number"),
        ("max-drop-negative", "max_drop: -1\n", 1, "max_drop", ">= 0"),
        ("alpha-above-one", "alpha: 1.5\n", 1, "alpha", "less than 1"),
        ("duplicate-rule", "rules:\n  - {task: mc}\n  - {task: mc}\n", None, None, "repeated: mc/primary"),
        ("iters-too-few", "iters: 10\n", 1, "iters", "greater than or equal to 100"),
        ("seed-negative", "seed: -4\n", 1, "seed", "greater than or equal to 0"),
        ("unknown-task", "rules:\n  - {task: essays}\n", 2, None, "essays"),
        ("alias-bomb", BOMB, 6, None, "aliases"),
    ]],
    Case("gate-adapter-without-suite", ["gate", "-b", "base", "-c", "ad", "--rules", "g.yaml"],
         {"g.yaml": "rules: []\n", "ad": DIR, "ad/adapter_config.json": "{}"}, file="g.yaml", field="suite",
         says="needs a suite"),
    Case("gate-unknown-baseline", ["gate", "-b", "nobody", "-c", "a1"], file="store.sqlite", field="--baseline",
         says="no evaluation has a model labelled 'nobody'"),
    Case("gate-unknown-label-in-eval", ["gate", "-b", "ev-2026:base", "-c", "ev-2026:zz"], file="store.sqlite",
         field="--candidate", says="no model 'zz'"),
    Case("gate-unknown-eval", ["gate", "-b", "ev-1999:base", "-c", "a1"], file="store.sqlite", field="--baseline",
         says="no evaluation 'ev-1999'"),
    Case("gate-out-is-a-file", ["gate", "-b", "base", "-c", "a1", "--out", "notes.md"], file="notes.md",
         field="--out", says="not a folder"),
    Case("gate-junit-folder", ["gate", "-b", "base", "-c", "a1", "--junit", "j"], {"j": DIR}, file="j",
         field="--junit", says="is a folder"),
    Case("gate-markdown-under-a-file", ["gate", "-b", "base", "-c", "a1", "--markdown", "notes.md/g.md"],
         file="g.md", field="--markdown", says="is a file"),
    Case("gate-store-foreign", ["gate", "-b", "base", "-c", "a1", "--store", "c.db"], {"c.db": foreign_sqlite},
         file="c.db", field="--store", says="another program"),
    Case("gate-store-text", ["gate", "-b", "base", "-c", "a1", "--store", "notes.md"], file="notes.md",
         field="--store", says="not an SQLite file"),
    Case("gate-baseline-missing", ["gate", "-c", "a1"], says="Missing option '--baseline'"),
    # --- report -------------------------------------------------------------------------------------------------------
    Case("report-out-is-a-file", ["report", "--latest", "--out", "notes.md"], file="notes.md", field="--out",
         says="not a folder"),
    Case("report-out-under-a-file", ["report", "--latest", "--out", "notes.md/r"], file="r", field="--out",
         says="is a file"),
    Case("report-nothing", ["report", "--out", "r"], says="nothing to report"),
    Case("report-format", ["report", "--latest", "--format", "pdf", "--out", "r"], field="--format", says="pdf"),
    Case("report-unknown-eval", ["report", "--eval", "ev-1999", "--out", "r"], file="store.sqlite",
         field="evaluation", says="no evaluation 'ev-1999'"),
    Case("report-train-run-missing", ["report", "--train-run", "runs/none", "--out", "r"], file="none",
         says="run"),
    Case("report-store-text", ["report", "--latest", "--out", "r", "--store", "notes.md"], file="notes.md",
         field="--store", says="not an SQLite file"),
    Case("report-store-malformed", ["report", "--latest", "--out", "r", "--store", "broken.sqlite"],
         {"broken.sqlite": malformed_store}, file="broken.sqlite", field="--store", says="damaged"),
    Case("report-out-missing", ["report", "--latest"], says="Missing option '--out'"),
    # --- runs ---------------------------------------------------------------------------------------------------------
    Case("runs-show-unknown-id", ["runs", "show", "ev-1999"], file="store.sqlite", field="evaluation",
         says="no evaluation"),
    Case("runs-show-predictions-csv-folder", ["runs", "show", "latest", "--predictions-csv", "out"], {"out": DIR},
         file="out", field="--predictions-csv", says="is a folder"),
    Case("runs-show-output-dir-file", ["runs", "show", "latest", "--output-dir", "notes.md"], file="notes.md",
         field="--output-dir", says="not a folder"),
    Case("runs-export-unknown-id", ["runs", "export", "ev-1999", "-f", "csv", "-o", "x.csv"], file="store.sqlite",
         field="evaluation", says="no evaluation"),
    Case("runs-export-unknown-format", ["runs", "export", "-f", "xlsx", "-o", "x.xlsx"], field="--format",
         says="unknown format 'xlsx'; choose one of csv, jsonl, parquet"),
    Case("runs-export-unknown-table", ["runs", "export", "-f", "csv", "-o", "x.csv", "--table", "models"],
         field="--table", says="unknown table 'models'; choose samples or scores"),
    Case("runs-export-out-folder", ["runs", "export", "-f", "csv", "-o", "out"], {"out": DIR}, file="out",
         field="--out", says="is a folder"),
    Case("runs-export-out-missing", ["runs", "export", "-f", "csv"], says="Missing option '--out'"),
    Case("runs-list-limit-zero", ["runs", "list", "--limit", "0"], field="--limit", says="--limit 0"),
    Case("runs-list-store-folder", ["runs", "list", "--store", "st"], {"st": DIR}, file="st", field="--store",
         says="is a folder"),
    Case("runs-list-store-malformed", ["runs", "list", "--store", "broken.sqlite"],
         {"broken.sqlite": malformed_store}, file="broken.sqlite", field="--store", says="damaged"),
    Case("runs-list-store-future", ["runs", "list", "--store", "f.sqlite"], {"f.sqlite": future_store},
         file="f.sqlite", field="--store", says="newer"),
    Case("runs-list-store-symlink-loop", ["runs", "list", "--store", "l.sqlite"], {"l.sqlite": LOOP},
         file="l.sqlite", field="--store", says="symbolic links"),
    Case("runs-list-store-under-a-file", ["runs", "list", "--store", "notes.md/s.sqlite"], file="s.sqlite",
         field="--store", says="no store here"),
    *[Case(f"{name}-store-missing", [*argv, "--store", "typo.sqlite"], file="typo.sqlite", field="--store",
           says="no store here") for name, argv in (("runs-list", ["runs", "list"]), ("runs-show", ["runs", "show"]),
                                                    ("report", ["report", "--latest", "--out", "r"]),
                                                    ("gate", ["gate", "-b", "base", "-c", "a1"]))],
    # --- models info, demo --------------------------------------------------------------------------------------------
    Case("models-info-missing-gguf", ["models", "info", "none.gguf"], file="none.gguf", says="not found"),
    Case("models-info-fake-gguf", ["models", "info", "fake.gguf"], {"fake.gguf": b"GGML\0\0\0"}, file="fake.gguf",
         says="not a GGUF file"),
    Case("models-info-config-not-json", ["models", "info", "b"], {"b": bad_dir("{")}, file="config.json",
         says="not valid JSON"),
    Case("models-info-custom-code", ["models", "info", "b"], {"b": bad_dir({**LLAMA, "auto_map": {"x": "y.Z"}})},
         file="config.json", field="auto_map", says="its own Python code"),
    Case("models-info-folder-without-config", ["models", "info", "b"], {"b": DIR}, file="b", says="no config.json"),
    Case("demo-steps-zero", ["demo", "--steps", "0", "--out", "d"], field="--steps", says="--steps 0"),
    Case("demo-limit-zero", ["demo", "--limit", "0", "--out", "d"], field="--limit", says="--limit 0"),
    Case("demo-out-is-a-file", ["demo", "--out", "notes.md"], file="notes.md", field="--out", says="not a folder"),
]
MODEL_CASES = {"train-target-modules-match-nothing", "train-layers-beyond-depth", "train-layers-negative"}
for case in CASES:
    case.model = case.id in MODEL_CASES


def test_the_table_covers_every_command_and_at_least_150_cases():
    commands = {" ".join(c.argv[:2]) if c.argv[0] in ("data", "tasks", "runs", "models") else c.argv[0]
                for c in CASES}
    assert len(CASES) >= 150 and len({c.id for c in CASES}) == len(CASES)
    assert commands >= {"data split", "data check", "tasks list", "tasks build", "eval", "generate", "chat", "train",
                        "gate", "report", "runs show", "runs list", "runs export", "models info", "demo"}


def snapshot(root: Path) -> dict:
    """Every path under root with its content's hash (SQLite's -wal/-shm companions aside: rows are compared
    through SQLite instead), and the row count of every table of every store."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.endswith(("-wal", "-shm")) or "__pycache__" in rel:
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            state[rel] = "special"
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            if path.read_bytes()[:16] == database.SQLITE_HEADER:
                try:
                    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
                        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                        state[rel + " rows"] = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                                                for t in tables}
                except sqlite3.DatabaseError as exc:
                    state[rel + " rows"] = str(exc)
    return state


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model_dir):
    root = tmp_path / "w"
    root.mkdir()
    files = {"qa.jsonl": jl(*QA), "mc.jsonl": jl(*MC), "t.jsonl": jl(*TOPICS), "notes.md": NOTES, "suite.yaml": SUITE,
             "gate.yaml": GATE, "p.txt": "hello\n"}
    for name, text in files.items():
        (root / name).write_text(text)
    with database.connect(root / "store.sqlite") as conn:
        database.save_evaluation(conn, stored_evaluation())
    conn.close()
    monkeypatch.chdir(root)
    monkeypatch.setenv("ADAPTERBENCH_STORE", str(root / "store.sqlite"))
    monkeypatch.setenv("ADAPTERBENCH_HOME", str(tmp_path / "home"))  # caches, outside the compared tree
    return root


def materialize(root: Path, name: str, content, tiny: Path) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and content is not DIR:
        raise AssertionError(f"{name} exists as a folder")
    path.unlink(missing_ok=True)
    if content is FIFO:
        os.mkfifo(path)
    elif content is DIR:
        path.mkdir(exist_ok=True)
    elif content is LOOP:
        path.symlink_to(path.name)
    elif callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("{tiny_yaml}", train_yaml(tiny)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, workspace, tiny_model_dir, monkeypatch, capsys):
    for name, content in case.files.items():
        materialize(workspace, name, content, tiny_model_dir)
    if not case.model:
        def no_model(*args, **kwargs):
            raise AssertionError("a model was loaded for input that could be refused without one")

        monkeypatch.setattr("adapterbench.adapters.models.load_model", no_model)
    argv = [str(a).replace("{tiny}", str(tiny_model_dir)) for a in case.argv]
    before = snapshot(workspace)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]  # progress bars aside
    assert exit_info.value.code == 2, (err, out)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    message = lines[0]
    assert "Traceback" not in err + out and "internal error" not in message, message
    if case.file is not None:
        where = rf"{re.escape(case.file)}:{case.line}: " if case.line else rf"{re.escape(case.file)}(:\d+)?: "
        assert re.search(where, message), message
    elif case.line:
        assert f":{case.line}: " in message, message
    if case.field:
        assert f"field '{case.field}'" in message, message
    assert case.says in message, message
    assert snapshot(workspace) == before, message


def make_read_only(path: Path, request) -> None:
    """chmod, and for root (whom permissions do not stop) the immutable attribute; skip where neither holds."""
    path.chmod(0o555 if path.is_dir() else 0o444)
    request.addfinalizer(lambda: path.chmod(0o755))  # finalizers run last-in first-out: this one after chattr -i
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)], capture_output=True))
    if os.access(path, os.W_OK):
        pytest.skip("this filesystem or user ignores read-only permissions")


@pytest.mark.parametrize("target, argv, field_name", [
    ("store.sqlite", ["eval", "suite.yaml", "--base", "{tiny}", "--store", "store.sqlite"], "--store"),
    ("ro", ["eval", "suite.yaml", "--base", "{tiny}", "--store", "ro/new.sqlite"], "--store"),
    ("ro", ["train", "t.yaml"], "out"),
    ("ro", ["report", "--latest", "--out", "ro/report"], "--out"),
    ("ro", ["gate", "-b", "base", "-c", "a1", "--junit", "ro/j.xml"], "--junit"),
])
def test_read_only_destinations_are_refused_before_any_work(target, argv, field_name, workspace, tiny_model_dir,
                                                            monkeypatch, capsys, request):
    (workspace / "ro").mkdir()
    (workspace / "t.yaml").write_text(train_yaml(tiny_model_dir).replace("out: run", "out: ro/run"))
    make_read_only(workspace / target, request)
    monkeypatch.setattr("adapterbench.adapters.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as exit_info:
        main([a.replace("{tiny}", str(tiny_model_dir)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"field '{field_name}'" in err and "writable" in err, err
    assert snapshot(workspace) == before
