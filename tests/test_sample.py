"""The bundled sample domain stays valid and as large as promised: every file checks clean, each kind has a
held-out part, and the demo's suite.yaml and train.yaml load."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterbench.config import load_suite, load_train
from adapterbench.datafiles.reading import check_file, read_records

SAMPLE = Path(__file__).resolve().parents[1] / "adapterbench" / "sample"
LABELS = ["training", "evaluation", "quantization", "architecture"]


@pytest.mark.parametrize("name, kind, minimum, labels", [
    ("notes.md", "text", 60, None),
    ("qa.jsonl", "instruction", 60, None),
    ("mc.jsonl", "multiple_choice", 40, None),
    ("topics.jsonl", "classification", 60, LABELS),
])
def test_sample_file_is_clean_and_large_enough(name, kind, minimum, labels):
    report = check_file(SAMPLE / name, kind, labels=labels)
    assert report["problems"] == []
    assert report["records"] >= minimum


def test_every_mc_question_has_four_choices():
    assert {len(r["choices"]) for r in read_records(SAMPLE / "mc.jsonl", "multiple_choice")} == {4}


@pytest.mark.parametrize("stem", ["notes", "qa", "mc", "topics"])
def test_each_kind_has_a_train_and_held_out_part(stem):
    assert (SAMPLE / "data" / f"{stem}_train.jsonl").stat().st_size > 0
    assert (SAMPLE / "data" / f"{stem}_test.jsonl").stat().st_size > 0


def test_demo_configs_load_and_point_at_existing_files():
    suite = load_suite(SAMPLE / "suite.yaml")
    assert all(task.data.is_file() for task in suite.tasks)
    train = load_train(SAMPLE / "train.yaml")
    assert train.data.train.is_file() and train.data.val.is_file() and train.eval.suite.is_file()
