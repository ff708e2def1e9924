"""Rewrite the train and val splits as instruction pairs whose prompt is exactly the one the `zeroshot` task is
scored with, so the adapter learns the question it will be asked. Usage: python to_instructions.py"""

from pathlib import Path

from adapterbench import data
from adapterbench.config import load_suite
from adapterbench.tasks.compile import classification_instructions

task = next(t for t in load_suite("suite.yaml").tasks if t.name == "zeroshot")
for part in ("train", "val"):
    records = classification_instructions(task, Path("splits") / f"comments_{part}.jsonl")
    data.write_jsonl(Path("splits") / f"sft_{part}.jsonl", records)
    print(f"{len(records)} {part} items -> splits/sft_{part}.jsonl")
