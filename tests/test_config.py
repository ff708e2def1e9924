"""suite.yaml / train.yaml loading: the issue's minimal forms load, paths resolve from the file's folder, and every
mistake is one error naming file, line, key and value."""

from __future__ import annotations

import textwrap

import pytest

from adapterbench.config import load_suite, load_train
from adapterbench.errors import UserError

SUITE = """\
name: sample
tasks:
  - {name: notes_mc,  type: multiple_choice, data: data/mc_test.jsonl}
  - {name: notes_ppl, type: perplexity,      data: data/notes_test.jsonl}
  - {name: qa,        type: generation,      data: data/qa_test.jsonl, max_new_tokens: 64}
"""
TRAIN = """\
base_model: default
data: {format: instruction, train: data/qa_train.jsonl, val: data/qa_val.jsonl}
lora: {r: 16, alpha: 16, dropout: 0.05}
quant: nf4
max_steps: 200
eval: {every: 50, suite: suite.yaml}
out: runs/qa
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_suite_loads_with_paths_relative_to_the_file(tmp_path):
    suite = load_suite(write(tmp_path, "suite.yaml", SUITE))
    assert [t.type for t in suite.tasks] == ["multiple_choice", "perplexity", "generation"]
    assert suite.tasks[0].data == tmp_path / "data" / "mc_test.jsonl"
    assert suite.tasks[2].max_new_tokens == 64


def test_minimal_train_config_loads_with_qlora_defaults(tmp_path):
    config = load_train(write(tmp_path, "train.yaml", TRAIN))
    assert config.quant == "nf4" and config.lr == 2e-4 and config.max_grad_norm == 0.3
    assert config.lora.target_modules == "all-linear"
    assert config.out == tmp_path / "runs" / "qa"
    assert config.eval.suite == tmp_path / "suite.yaml"


def test_overrides_set_nested_keys_with_yaml_values(tmp_path):
    config = load_train(write(tmp_path, "train.yaml", TRAIN), ["lora.r=8", "lr=1e-4", "lora.layers=[0, 1]", "lora.target_modules=[q_proj]"])
    assert (config.lora.r, config.lr, config.lora.layers) == (8, 1e-4, [0, 1])


def test_unknown_key_names_line_and_suggests_the_right_one(tmp_path):
    path = write(tmp_path, "suite.yaml", SUITE.replace("max_new_tokens: 64", "max_new_token: 64"))
    with pytest.raises(UserError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:5: field 'tasks[2].max_new_token': unknown key")
    assert "did you mean 'max_new_tokens'?" in str(err.value)


def test_bad_value_names_key_and_value(tmp_path):
    path = write(tmp_path, "suite.yaml", SUITE.replace("type: perplexity", "type: perplexed"))
    with pytest.raises(UserError, match=r"suite.yaml:4: field 'tasks\[1\].type': .*got 'perplexed'"):
        load_suite(path)


def test_unknown_override_key_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"field 'lora.rank': unknown key; known keys: r, alpha"):
        load_train(write(tmp_path, "train.yaml", TRAIN), ["lora.rank=8"])


def test_steps_and_epochs_are_exclusive(tmp_path):
    with pytest.raises(UserError, match="exactly one of 'max_steps' and 'epochs'"):
        load_train(write(tmp_path, "train.yaml", TRAIN + "epochs: 2\n"))


def test_classification_task_requires_labels(tmp_path):
    path = write(tmp_path, "suite.yaml", "name: s\ntasks:\n  - {name: c, type: classification, data: c.jsonl}\n")
    with pytest.raises(UserError, match="needs 'labels'"):
        load_suite(path)


def test_duplicate_task_names_are_refused(tmp_path):
    path = write(tmp_path, "suite.yaml", SUITE.replace("name: qa", "name: notes_mc"))
    with pytest.raises(UserError, match="repeated: notes_mc"):
        load_suite(path)


def test_invalid_yaml_reports_its_line(tmp_path):
    path = write(tmp_path, "suite.yaml", "name: s\ntasks: [\n  - {name: x\n")
    with pytest.raises(UserError, match=r"suite.yaml:\d+: invalid YAML"):
        load_suite(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_suite(tmp_path / "nope.yaml")


def test_labels_that_give_the_same_metric_name_are_refused(tmp_path):
    path = write(tmp_path, "suite.yaml", "name: s\ntasks:\n  - {name: c, type: classification, data: c.jsonl, "
                                         "labels: [négatif, negatif, positive]}\n")
    with pytest.raises(UserError, match="give the same metric name"):
        load_suite(path)


def test_lora_layers_combine_with_all_linear_or_module_names():
    """The trainer names all-linear's layers itself when layers are chosen (tests/test_architectures.py trains it)."""
    from adapterbench.config import LoraConfig

    assert LoraConfig(layers=[1]).target_modules == "all-linear"
    assert LoraConfig(layers=[1], target_modules=["q_proj"]).layers == [1]
