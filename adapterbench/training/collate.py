"""Training examples and batches: instruction pairs, conversations and a suite task's questions through the chat
template with loss on the assistant's answers only, text packed into fixed blocks, and seeded length-grouped batches
that a resumed run can rebuild exactly."""

from __future__ import annotations

import random

import torch

from adapterbench.datafiles.reading import read_records
from adapterbench.errors import UserError

IGNORE = -100


def load_examples(path, data_format: str, tokenizer, max_length: int, fields: dict | None = None,
                  task=None) -> list[dict]:
    """Tokenized examples ({input_ids, labels}) from a data file; refuses a set with nothing to learn. `task` (a
    suite's TaskConfig) is the one format `task` renders its records as."""
    if data_format == "text":
        return text_blocks([r["text"] for r in read_records(path, "text", fields=fields or None)], tokenizer,
                           max_length)
    if data_format == "task":
        from adapterbench.tasks.compile import task_pairs

        examples = [task_example(pair, tokenizer, max_length, task.chat_template) for pair in task_pairs(task, path)]
    elif data_format == "chat":
        examples = [chat_example(r["messages"], tokenizer, max_length, path=path)
                    for r in read_records(path, "chat", fields=fields or None)]
    else:
        examples = [instruction_example(r, tokenizer, max_length)
                    for r in read_records(path, "instruction", fields=fields or None)]
    kept = [e for e in examples if any(label != IGNORE for label in e["labels"])]
    if not kept:
        raise UserError(f"every example's response lies beyond max_length={max_length} tokens, so no label is "
                        "left to learn from; raise max_length or shorten the prompts", path=path)
    return kept


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_example(messages: list[dict], tokenizer, max_length: int, *, learn_from: int = 0, path=None) -> dict:
    """A conversation through the chat template with labels on its assistant turns (those at index >= learn_from)
    only. Rendered turn by turn: the text up to each assistant turn, generation prompt included, is masked, and the
    text through the end of that turn is learned; so any template works, with or without `{% generation %}` markers
    (the end-of-turn tokens are learned too: they are how the model stops)."""
    if not tokenizer.chat_template:
        raise UserError("chat data needs a base model with a chat template, and this one has none", path=path)
    input_ids, labels, done = [], [], ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < learn_from:
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not prompt.startswith(done) or not through.startswith(prompt):
            # e.g. a template that drops earlier assistant turns' reasoning: no one sequence holds every turn
            raise UserError(f"the chat template renders turns 0-{i - 1} differently once turn {i} follows, so the "
                            "assistant turns cannot be masked in one sequence; train on one turn per record", path=path)
        context, answer = _ids(tokenizer, prompt[len(done):]), _ids(tokenizer, through[len(prompt):])
        input_ids += context + answer
        labels += [IGNORE] * len(context) + answer
        done = through
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def instruction_example(record: dict, tokenizer, max_length: int) -> dict:
    """Prompt and response rendered by the chat template (plain `prompt\\n\\nresponse<eos>` without one); labels
    cover the response and the end-of-turn tokens only."""
    prompt_text = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    if tokenizer.chat_template:
        return chat_example([{"role": "user", "content": prompt_text},
                             {"role": "assistant", "content": record["output"]}], tokenizer, max_length)
    prompt_ids = _ids(tokenizer, f"{prompt_text}\n\n")
    response_ids = _ids(tokenizer, record["output"] + (tokenizer.eos_token or ""))
    return {"input_ids": (prompt_ids + response_ids)[:max_length],
            "labels": ([IGNORE] * len(prompt_ids) + response_ids)[:max_length]}


def task_example(pair: dict, tokenizer, max_length: int, chat_template: bool = True) -> dict:
    """A suite task's question and answer (compile.task_pairs) as lm-eval puts a labeled example of that task before
    the model: through the chat template as user and assistant turns when the task uses one and the base has one,
    else as plain text, the answer after lm-eval's target delimiter (a space) and ended by EOS."""
    from adapterbench.tasks.compile import TARGET_DELIMITER, plain_context

    if chat_template and tokenizer.chat_template:
        turns = pair["messages"] + [{"role": "assistant", "content": pair["target"]}]
        return chat_example(turns, tokenizer, max_length, learn_from=len(turns) - 1)
    context = _ids(tokenizer, plain_context(pair["messages"]))
    answer = _ids(tokenizer, TARGET_DELIMITER + pair["target"]) + [tokenizer.eos_token_id]
    return {"input_ids": (context + answer)[:max_length], "labels": ([IGNORE] * len(context) + answer)[:max_length]}


def text_blocks(texts: list[str], tokenizer, max_length: int) -> list[dict]:
    """Next-token prediction over all text: paragraphs joined with EOS and cut into blocks of max_length."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    blocks = [b for b in blocks if len(b) > 1]
    if not blocks:
        raise UserError("the text is empty after tokenization")
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def epoch_batches(examples: list[dict], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indexes per batch for one epoch: shuffled, then sorted by length within windows of 32 batches so a
    batch carries little padding, then the batches shuffled. A function of (seed, epoch) only, so resuming at a
    batch index rebuilds the same order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -len(examples[i]["input_ids"]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[dict], pad_id: int) -> dict:
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
