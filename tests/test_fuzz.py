"""Property-based fuzzing (hypothesis) of the config loaders (suite, train, gate YAML and train's KEY=VALUE
overrides) and the data readers (jsonl, csv, md of every kind; prompts files): whatever the bytes, the only
exception is UserError. Bounded and derandomized, so it is fast and the same on every run."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterbench.config import load_gate, load_suite, load_train
from adapterbench.datafiles.reading import KINDS, check_file, read_records
from adapterbench.errors import UserError
from adapterbench.harness.generate import read_prompts

# FUZZ_EXAMPLES=5000 for a deeper run by hand; 60 per test keeps `make test` fast
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Real keys and values mixed with noise, so examples reach the schemas' deeper checks, not only "unknown key".
KEYS = ["name", "tasks", "type", "data", "fields", "limit", "labels", "num_fewshot", "fewshot_data", "verbalizers",
        "method", "group_by", "base_model", "format", "train", "val", "lora", "r", "alpha", "layers", "target_modules",
        "eval", "every", "suite", "early_stopping", "metric", "seed", "max_steps", "epochs", "out", "checkpoint",
        "rules", "task", "max_drop", "iters", "confidence", "<<", "x", ""]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.sampled_from(["generation", "classification", "instruction", "text", "data.jsonl", "5%",
                                     "-1%", "all-linear", "qa", "a-b", "1e400", "~", "*x", "!!python/none"]),
                    st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                      max_leaves=20)
ANY_KEY = st.one_of(st.sampled_from(KEYS), st.integers(-3, 3), st.none(), st.booleans())
DOCUMENTS = st.one_of(st.dictionaries(ANY_KEY, VALUES, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                      st.text(max_size=200),
                      st.binary(max_size=200).map(lambda b: b.decode("latin-1")))


def only_user_errors(call, *args) -> None:
    try:
        call(*args)
    except UserError:
        pass  # anything else propagates and fails the example


@contextmanager
def written(name: str, content):
    """`content` as a file `name` in a fresh folder (beside a valid data.jsonl that configs may point at)."""
    with tempfile.TemporaryDirectory(prefix="adapterbench-fuzz-") as folder:
        (Path(folder) / "data.jsonl").write_text('{"instruction": "q", "output": "a", "text": "t", "label": "x"}\n')
        path = Path(folder) / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        yield path


@FUZZ
@given(DOCUMENTS, st.sampled_from(["suite", "train", "gate"]))
def test_config_loaders_raise_only_user_errors(text, kind):
    with written(f"{kind}.yaml", text) as path:
        only_user_errors({"suite": load_suite, "train": load_train, "gate": load_gate}[kind], path)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS + ["lora.r", "eval.every", "data.train", "a.b.c"]),
                          st.text(max_size=20)).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=20),
                max_size=3))
def test_train_overrides_raise_only_user_errors(overrides):
    with written("train.yaml", "data: {format: instruction, train: data.jsonl}\nmax_steps: 1\n") as path:
        only_user_errors(load_train, path, overrides)


ROW_KEYS = ["id", "text", "instruction", "input", "output", "question", "choices", "answer", "context", "label",
            "choice0", "choice1", "A", "B", "nested"]
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**20), st.floats(allow_nan=True),
                                     st.text(max_size=10), st.sampled_from(["A", "b", "0", "pos", "neg", ""])),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3),
                           max_leaves=8)
JSONL = st.lists(st.one_of(st.dictionaries(st.sampled_from(ROW_KEYS), JSON_VALUES, max_size=6).map(json.dumps),
                           st.text(max_size=30)), max_size=6).map("\n".join)
CSV = st.lists(st.lists(st.one_of(st.sampled_from(ROW_KEYS), st.text(max_size=8)), min_size=1, max_size=5)
               .map(lambda cells: ",".join(f'"{c}"' if "," in c else c for c in cells)), max_size=6).map("\n".join)
MARKDOWN = st.lists(st.one_of(st.sampled_from(["# h", "```", "~~~", "<!-- c", "-->", "", "[l](u)", "**b**",
                                               ":label:`x`", "$x$", "text here"]), st.text(max_size=30)),
                    max_size=12).map("\n".join)
CONTENT = {".jsonl": JSONL, ".csv": CSV, ".tsv": CSV.map(lambda t: t.replace(",", "\t")), ".md": MARKDOWN,
           ".txt": MARKDOWN}


FIELDS = st.sampled_from([None, {"output": "nested.0"}, {"text": "nested.a.b"}, {"label": "A"}, {"id": "answer"},
                          {"choices": "nested"}, {"question": "text", "answer": "label"}])


@FUZZ
@given(st.data(), st.sampled_from(KINDS), st.sampled_from(sorted(CONTENT)),
       st.sampled_from([None, ["pos", "neg"], ["a", "b", "c"]]), FIELDS)
def test_data_readers_raise_only_user_errors(draw, kind, ext, labels, fields):
    content = draw.draw(st.one_of(CONTENT[ext], st.binary(max_size=120)), label="content")
    labels = labels if kind == "classification" else None
    with written(f"d{ext}", content) as path:
        only_user_errors(lambda: read_records(path, kind, labels=labels, fields=fields))
        try:
            report = check_file(path, kind, labels=labels, fields=fields)  # problems collected, not raised
        except UserError as err:  # only for arguments no file could satisfy: a field this kind does not have
            assert "unknown field" in str(err)
            return
        assert isinstance(report["problems"], list)


@FUZZ
@given(st.sampled_from([".txt", ".jsonl", ".csv"]), st.data())
def test_prompts_files_raise_only_user_errors(ext, draw):
    content = draw.draw(st.one_of(CONTENT[ext if ext != ".txt" else ".md"], st.binary(max_size=120)),
                        label="content")
    with written(f"p{ext}", content) as path:
        only_user_errors(read_prompts, path)
