"""The training benchmark's final loss: each trained adapter's mean cross-entropy over the supervised tokens of the
whole training set, after training, on the same examples for every adapter (the instruction records through the
chat template, loss on the response only, max length 256: what both sides trained on). Each adapter goes on the NF4
base with PEFT's own `PeftModel.from_pretrained` and is scored by the model's own forward in eval mode (no dropout),
in the dtype both sides trained in (`auto`: bf16 autocast on a CPU with AVX512-BF16 or AMX, else fp32, where
emulated bf16 would take hours); the base loads once and each adapter is taken off again (adapterbench's `attached`).
Prints ONE JSON line {adapter dir: loss} on stdout.

    .venv/bin/python bench/training_set_loss.py --data FILE.jsonl ADAPTER_DIR [ADAPTER_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MAX_LENGTH = 256
BATCH = 8


def examples(data: Path, tokenizer) -> list[dict]:
    from adapterbench.datafiles.reading import read_records
    from adapterbench.training.collate import IGNORE, instruction_example

    made = [instruction_example(record, tokenizer, MAX_LENGTH) for record in read_records(data, "instruction")]
    return [e for e in made if any(label != IGNORE for label in e["labels"])]


def mean_loss(model, rows: list[dict], pad_id: int, bf16: bool) -> tuple[float, int]:
    import torch
    import torch.nn.functional as F

    from adapterbench.training.collate import IGNORE, collate

    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(rows), BATCH):
            batch = collate(rows[start:start + BATCH], pad_id)  # right-padded: the causal mask keeps rows exact
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            targets = batch["labels"][:, 1:]
            total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                           reduction="sum"))
            count += int((targets != IGNORE).sum())
    return total / count, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("adapters", type=Path, nargs="+")
    args = parser.parse_args()

    import torch

    from adapterbench.adapters.attach import attached
    from adapterbench.adapters.models import load_model

    base, tokenizer = load_model("default", dtype="auto", quant="nf4")
    bf16 = base.dtype == torch.bfloat16
    rows = examples(args.data, tokenizer)
    result = {}
    for adapter in args.adapters:
        with attached(base, adapter) as model:  # PEFT's own from_pretrained, in eval mode
            loss, tokens = mean_loss(model, rows, tokenizer.pad_token_id, bf16)
        result[str(adapter)] = {"loss": round(loss, 5), "examples": len(rows), "supervised_tokens": tokens,
                                "dtype": str(base.dtype).removeprefix("torch.")}
        print(f"{adapter}: {loss:.4f} over {tokens} supervised tokens of {len(rows)} examples", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
