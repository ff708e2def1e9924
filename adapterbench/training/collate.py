"""Training examples and batches: instruction pairs through the chat template with loss on the response only, text
packed into fixed blocks, and seeded length-grouped batches that a resumed run can rebuild exactly."""

from __future__ import annotations

import random

import torch

from adapterbench import data
from adapterbench.errors import UserError

IGNORE = -100


def load_examples(path, data_format: str, tokenizer, max_length: int, fields: dict | None = None) -> list[dict]:
    """Tokenized examples ({input_ids, labels}) from a data file; refuses a set with nothing to learn."""
    kind = "instruction" if data_format == "instruction" else "text"
    records = data.read_records(path, kind, fields=fields or None)
    if data_format == "instruction":
        examples = [instruction_example(r, tokenizer, max_length) for r in records]
        kept = [e for e in examples if any(label != IGNORE for label in e["labels"])]
        if not kept:
            raise UserError(f"every example's response lies beyond max_length={max_length} tokens, so no label is "
                            "left to learn from; raise max_length or shorten the prompts", path=path)
        return kept
    return text_blocks([r["text"] for r in records], tokenizer, max_length)


def instruction_example(record: dict, tokenizer, max_length: int) -> dict:
    """Prompt and response rendered by the chat template (plain `prompt\\n\\nresponse<eos>` without one); labels
    cover the response and the end-of-turn tokens only."""
    prompt_text = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    user = [{"role": "user", "content": prompt_text}]
    if tokenizer.chat_template:
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": record["output"]}],
                                             tokenize=False)
    else:
        prompt = f"{prompt_text}\n\n"
        full = prompt + record["output"] + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # The template may add text before the assistant turn is closed differently; the prompt must stay a prefix.
    response_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"] if full.startswith(prompt) \
        else tokenizer(full, add_special_tokens=False)["input_ids"][len(prompt_ids):]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


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
