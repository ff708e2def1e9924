"""Conversations and suite tasks as training data: assistant-only masks under the default model's template and a
template with `{% generation %}` markers, a generation task over each conversation's last assistant turn, and a
suite task's records rendered to train on exactly as lm-eval asks and scores them."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from adapterbench.config import load_suite
from adapterbench.errors import UserError
from adapterbench.training.collate import IGNORE, chat_example, load_examples, task_example

from conftest import tiny_tokenizer

# SmolLM2-135M-Instruct's own template (the default model): ChatML, with a default system turn when none is given
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# ChatML whose assistant turns are marked for transformers' return_assistant_tokens_mask
MARKED_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [{"role": "user", "content": "What does LoRA freeze?"},
                {"role": "assistant", "content": "The pretrained weights."},
                {"role": "user", "content": "And what does it learn?"},
                {"role": "assistant", "content": "A low-rank update."}]


def tokenizer_with(template: str):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def expected(tokenizer, spans: list[tuple[str, bool]]) -> dict:
    """Input ids and labels from hand-written (text, learned) spans."""
    ids, labels = [], []
    for text, learned in spans:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if learned else [IGNORE] * len(piece)
    return {"input_ids": ids, "labels": labels}


def test_chat_mask_is_the_hand_computed_one_under_the_default_models_template():
    tokenizer = tokenizer_with(SMOLLM2_TEMPLATE)
    spans = [("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
              "<|im_start|>user\nWhat does LoRA freeze?<|im_end|>\n<|im_start|>assistant\n", False),
             ("The pretrained weights.<|im_end|>\n", True),
             ("<|im_start|>user\nAnd what does it learn?<|im_end|>\n<|im_start|>assistant\n", False),
             ("A low-rank update.<|im_end|>\n", True)]
    assert "".join(text for text, _ in spans) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert chat_example(CONVERSATION, tokenizer, 512) == expected(tokenizer, spans)


def test_chat_mask_is_the_hand_computed_one_and_transformers_own_under_generation_markers():
    tokenizer = tokenizer_with(MARKED_TEMPLATE)
    turns = [{"role": "system", "content": "Answer briefly."}, *CONVERSATION]
    spans = [("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat does LoRA freeze?<|im_end|>\n"
              "<|im_start|>assistant\n", False),
             ("The pretrained weights.<|im_end|>\n", True),
             ("<|im_start|>user\nAnd what does it learn?<|im_end|>\n<|im_start|>assistant\n", False),
             ("A low-rank update.<|im_end|>\n", True)]
    ours = chat_example(turns, tokenizer, 512)
    assert ours == expected(tokenizer, spans)
    marked = tokenizer.apply_chat_template(turns, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert marked["input_ids"] == ours["input_ids"]
    assert [int(m) for m in marked["assistant_masks"]] == [int(label != IGNORE) for label in ours["labels"]]


def test_a_template_that_rewrites_earlier_turns_is_refused_not_mislabeled():
    # shows only the latest assistant turn in full, as templates that drop earlier reasoning do
    template = ("{% for m in messages %}{{ '<' + m['role'] + '>' }}{% if m['role'] != 'assistant' or loop.last %}"
                "{{ m['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    with pytest.raises(UserError, match="renders turns 0-2 differently once turn 3 follows"):
        chat_example(CONVERSATION, tokenizer_with(template), 512)


def test_chat_training_reads_both_spellings_to_the_same_examples(tmp_path):
    openai = tmp_path / "openai.jsonl"
    openai.write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text(json.dumps({"conversations": [{"from": {"user": "human", "assistant": "gpt"}[t["role"]],
                                                       "value": t["content"]} for t in CONVERSATION]}) + "\n")
    tokenizer = tiny_tokenizer()
    ours = load_examples(openai, "chat", tokenizer, 512)
    assert ours == load_examples(sharegpt, "chat", tokenizer, 512)
    assert ours == [chat_example(CONVERSATION, tokenizer, 512)]


CHATS = [{"id": "c1", "messages": [{"role": "system", "content": "Answer in one sentence."}, *CONVERSATION]},
         {"id": "c2", "conversations": [{"from": "human", "value": "What is NF4?"},
                                        {"from": "gpt", "value": "A 4-bit data type."}]}]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generation_task_over_conversations_shows_the_turns_before_the_last_answer(tmp_path):
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite

    write_jsonl(tmp_path / "chats.jsonl", CHATS)
    (tmp_path / "suite.yaml").write_text("name: s\ntasks:\n  - {name: replies, type: generation, data: chats.jsonl, "
                                         "system_prompt: Be kind.}\n")
    build_suite(load_suite(tmp_path / "suite.yaml"), tmp_path / "tasks")
    task = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False).load(["replies"])["tasks"]["replies"]
    docs = list(task.test_docs())
    assert [task.doc_to_target(d) for d in docs] == ["A low-rank update.", "A 4-bit data type."]
    tokenizer = tiny_tokenizer()
    render = partial(tokenizer.apply_chat_template, tokenize=False)
    contexts = [task.fewshot_context(d, 0, apply_chat_template=True, chat_template=render) for d in docs]
    # the record's own system turn stands; the task's system prompt fills in where a record has none
    assert contexts == [render(CHATS[0]["messages"][:-1], add_generation_prompt=True),
                        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nWhat is NF4?<|im_end|>\n"
                        "<|im_start|>assistant\n"]
    assert task.fewshot_context(docs[1], 0) == "Be kind.What is NF4?"  # lm-eval's plain layout: description + text


def test_eval_scores_a_generation_task_over_conversations(tiny_model_dir, tmp_path):
    from adapterbench.harness.evaluate import evaluate

    write_jsonl(tmp_path / "chats.jsonl", CHATS)
    (tmp_path / "suite.yaml").write_text("name: s\ntasks:\n  - {name: replies, type: generation, data: chats.jsonl, "
                                         "max_new_tokens: 4}\n")
    result = evaluate(tmp_path / "suite.yaml", base=str(tiny_model_dir), dtype="fp32", save=False)
    samples = sorted(result["samples"], key=lambda s: s["doc_id"])
    assert [s["reference"] for s in samples] == ["A low-rank update.", "A 4-bit data type."]
    assert samples[0]["prompt"].endswith("<|im_start|>user\nAnd what does it learn?<|im_end|>\n"
                                         "<|im_start|>assistant\n")
    assert "The pretrained weights." in samples[0]["prompt"]


SUITE = """\
name: s
tasks:
  - {name: cls_gen, type: classification, data: cls.jsonl, labels: [pos, neg], verbalizers: {pos: positive},
     system_prompt: Label the text.}
  - {name: cls_ll, type: classification, data: cls.jsonl, labels: [pos, neg], method: loglikelihood}
  - {name: cls_plain, type: classification, data: cls.jsonl, labels: [pos, neg], method: loglikelihood,
     chat_template: false}
  - {name: mc, type: multiple_choice, data: mc.jsonl}
  - {name: mc_plain, type: multiple_choice, data: mc.jsonl, chat_template: false}
  - {name: mc_gen, type: multiple_choice_generate, data: mc.jsonl}
  - {name: gen, type: generation, data: qa.jsonl, chat_template: false}
  - {name: replies, type: generation, data: chats.jsonl}
  - {name: ppl, type: perplexity, data: cls.jsonl, fields: {text: text}}
  - {name: fewshot, type: classification, data: cls.jsonl, labels: [pos, neg], num_fewshot: 1, fewshot_data: cls.jsonl}
"""


@pytest.fixture
def suite(tmp_path):
    write_jsonl(tmp_path / "cls.jsonl", [{"id": "t1", "text": "Great tool.", "context": "A review.", "label": "pos"},
                                         {"id": "t2", "text": "It broke.", "label": "neg"}])
    write_jsonl(tmp_path / "mc.jsonl", [{"id": "m1", "question": "LoRA learns", "choices": ["a low-rank update",
                                                                                           "all weights"], "answer": 0},
                                        {"id": "m2", "question": "NF4 has", "choices": ["8 bits", "4 bits", "2 bits"],
                                         "answer": "B"}])
    write_jsonl(tmp_path / "qa.jsonl", [{"id": "q1", "instruction": "Define BLEU.", "input": "One line.",
                                         "output": "An n-gram overlap score."}])
    write_jsonl(tmp_path / "chats.jsonl", CHATS)
    (tmp_path / "suite.yaml").write_text(SUITE)
    return load_suite(tmp_path / "suite.yaml")


TRAINABLE = ["cls_gen", "cls_ll", "cls_plain", "mc", "mc_plain", "mc_gen", "gen", "replies"]


def test_task_pairs_are_lm_evals_own_questions_and_answers_and_train_on_its_context(suite, tmp_path):
    """For every task type: the pair is lm-eval's doc_to_text and doc_to_target of the compiled task (the right
    choice's text for multiple choice), and the training example's masked part is the context lm-eval builds for
    that item, through the chat template as the task applies it, or in plain text with lm-eval's own continuation."""
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite, task_pairs

    build_suite(suite, tmp_path / "tasks")
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    tokenizer = tiny_tokenizer()
    render = partial(tokenizer.apply_chat_template, tokenize=False)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    for config in (t for t in suite.tasks if t.name in TRAINABLE):
        task = manager.load([config.name])["tasks"][config.name]
        docs = list(task.test_docs())
        pairs = task_pairs(config, config.data)
        assert [p["id"] for p in pairs] == [d["id"] for d in docs], config.name
        for pair, doc in zip(pairs, docs):
            target = task.doc_to_target(doc)
            if task.OUTPUT_TYPE == "multiple_choice":
                target = task.doc_to_choice(doc)[target]
            assert pair["target"] == target, config.name
            assert pair["messages"][-1]["content"] == task.doc_to_text(doc), config.name
            example = task_example(pair, tokenizer, 512, config.chat_template)
            masked = example["labels"].count(IGNORE)
            context = task.fewshot_context(doc, 0, apply_chat_template=config.chat_template,
                                           chat_template=render if config.chat_template else None)
            assert example["input_ids"][:masked] == encode(context), config.name
            learned = example["input_ids"][masked:]
            if config.chat_template:
                assert learned == encode(target + "<|im_end|>\n"), config.name
            else:
                assert learned == encode(" " + target) + [tokenizer.eos_token_id], config.name
            if not config.chat_template and task.OUTPUT_TYPE == "multiple_choice":
                # that is the continuation lm-eval scores for the right choice
                requests = task.construct_requests(doc, context, apply_chat_template=False)
                assert requests[task.doc_to_target(doc)].args[1] == " " + target
    assert [p["messages"][0] for p in task_pairs(suite.tasks[0], suite.tasks[0].data)] == \
        [{"role": "system", "content": "Label the text."}] * 2


@pytest.mark.parametrize("name, message", [("ppl", "scores perplexity"), ("fewshot", "1 drawn examples")])
def test_tasks_that_ask_no_single_question_are_refused_as_training_data(suite, name, message):
    from adapterbench.tasks.compile import task_pairs

    task = next(t for t in suite.tasks if t.name == name)
    with pytest.raises(UserError, match=message):
        task_pairs(task, task.data)


def train_yaml(tmp_path: Path, base: Path, data: str, extra: str = "") -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(f"base_model: {base}\nquant: none\ndtype: fp32\ndata: {data}\nlora: {{r: 4, alpha: 8}}\n"
                    f"batch_size: 2\nmax_steps: 2\nmax_length: 128\n{extra}out: run\n")
    return path


@pytest.mark.parametrize("data, message", [
    ("{format: task, train: cls.jsonl}", "format: task needs 'suite'"),
    ("{format: chat, train: chats.jsonl, task: cls_gen}", "'suite' and 'task' belong to format: task"),
])
def test_format_task_keys_are_checked_when_the_config_loads(tmp_path, data, message):
    from adapterbench.config import load_train

    with pytest.raises(UserError, match=message):
        load_train(train_yaml(tmp_path, tmp_path, data))


@pytest.mark.parametrize("data, message", [
    ("{format: task, suite: suite.yaml, task: nope, train: cls.jsonl}", r"train.yaml:4: field 'data.task': 'nope' "
     r"is not a task of .*suite.yaml, whose tasks are \['cls_gen'"),
    ("{format: task, suite: suite.yaml, task: ppl, train: cls.jsonl}", "scores perplexity"),
    ("{format: task, suite: suite.yaml, task: mc, train: cls.jsonl}", r"cls.jsonl:1: field 'question': missing"),
    ("{format: chat, train: mc.jsonl}", r"mc.jsonl:1: field 'messages': missing"),
])
def test_bad_training_data_fails_before_the_model_loads(suite, tmp_path, monkeypatch, data, message):
    from adapterbench.adapters import models
    from adapterbench.training import train

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(models, "load_model", no_loading)
    from adapterbench.config import load_train

    with pytest.raises(UserError, match=message):
        train(load_train(train_yaml(tmp_path, tmp_path, data)), store=tmp_path / "s.sqlite", show_progress=False)


@pytest.mark.parametrize("data", ["{format: chat, train: chats.jsonl, val: chats.jsonl}",
                                  "{format: task, suite: suite.yaml, task: cls_gen, train: cls.jsonl, val: cls.jsonl}"])
def test_training_on_conversations_and_on_a_task_runs_and_records_its_data(suite, tiny_model_dir, tmp_path, data):
    from adapterbench.config import load_train
    from adapterbench.training import train

    config = load_train(train_yaml(tmp_path, tiny_model_dir, data, "eval: {every: 2, suite: suite.yaml, "
                                                                   "tasks: [cls_gen], limit: 2}\n"))
    train(config, store=tmp_path / "s.sqlite", show_progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stats"]["steps"] == 2 and manifest["config"]["data"]["format"] == config.data.format
    curve = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in curve if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2] and all(r["val_loss"] > 0 and "cls_gen/acc" in r for r in evals)
