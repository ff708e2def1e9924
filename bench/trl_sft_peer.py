"""Peer side of the training benchmark: QLoRA on the default model with TRL's `SFTTrainer`, the way people do it
today. Measures training throughput (non-padding tokens per second of `trainer.train()`, model loading excluded),
the process's peak RSS and the per-step training loss, and prints them as ONE JSON line on stdout (logs go to
stderr). `bench/train_speed.py` runs it in its own process next to `adapterbench train`.

Workload: SmolLM2-135M-Instruct (adapterbench's embedded default) in 4-bit NF4 with double quantization, compute
in the dtype `adapterbench train` picks on this machine (`--dtype auto`: bf16 where the CPU computes it natively,
AVX512-BF16 or AMX, else fp32, since emulated bf16 would make the peer ~100x slower); LoRA r=16, alpha=16,
dropout 0.05 on all linear layers; the 175 Self-Instruct seed tasks as prompt/completion conversations (chat
template, loss on the completion only, max length 256); AdamW (torch), constant LR 2e-4, grad-norm clip 0.3, batch
4, 1 epoch, seed 0, gradient checkpointing, CPU. TRL drops the 5 examples whose prompt alone fills the 256 tokens
(no label left), so an epoch is 170 examples, 43 steps.

TRL is a benchmark-only dependency (not in pyproject.toml), installed under the project's pins:

    .venv/bin/pip install -c constraints.txt trl          # trl 1.16.0 with transformers 5.23.0, peft 0.21.2
    .venv/bin/python bench/trl_sft_peer.py [--data FILE.jsonl] [--max-steps N] [--output-dir DIR] [--save-adapter DIR]
                                      [--dtype auto|bf16|fp32]

--data takes the seed tasks file (instruction + instances[0].input/output) or a JSONL of instruction/input/output
records; the default is ../shared/data/self_instruct_seed_tasks.jsonl. For the GPU benchmark (bench/gpu_speed.py),
--text FILE trains on a JSONL of {"text": ...} records instead, as `adapterbench train` trains `format: text`: the
texts joined by end-of-text tokens and cut into blocks of --max-length tokens (TRL's "wrapped" packing), loss on every
token; --base takes a model dir, --device cuda runs on the GPU and reports its peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED_TASKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "self_instruct_seed_tasks.jsonl"
MAX_LENGTH = 256


def read_pairs(path: Path) -> list[dict]:
    """Prompt/completion conversations: prompt = instruction (+ "\\n\\n" + input when non-empty)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "instances" in record:  # the raw seed-task format
            record = {"instruction": record["instruction"], **record["instances"][0]}
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": record["output"]}]})
    return rows


def check_completion_only(dataset, tokenizer) -> dict:
    """Every prepared example: labels are -100 on a prefix that ends with the assistant header, and equal input_ids
    after it (the completion and its end-of-turn tokens). Returns counts; raises if masking is not in effect."""
    user = [{"role": "user", "content": "x"}]
    header = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)[
        len(tokenizer.apply_chat_template(user, tokenize=False)):]
    masked = supervised = 0
    for i, example in enumerate(dataset):
        ids, labels = example["input_ids"], example["labels"]
        k = next(j for j, label in enumerate(labels) if label != -100)
        if not (k > 0 and tokenizer.decode(ids[:k]).endswith(header) and labels[k:] == ids[k:]):
            raise SystemExit(f"completion-only masking is not in effect on example {i}: first label at {k}")
        masked, supervised = masked + k, supervised + len(ids) - k
        if i == 0:
            print(f"example 0: {k} prompt tokens masked, supervised text: {tokenizer.decode(ids[k:])!r}",
                  file=sys.stderr)
    return {"masked_prompt_tokens": masked, "supervised_tokens": supervised}


def step_timer(synchronize):
    """A callback summing the time from each optimizer step's start to its end (forward, backward, optimizer step),
    as `adapterbench train` counts its train_seconds; `train()` as a whole also holds the Trainer's set-up and
    logging, which weigh on a short run."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        seconds, started = 0.0, None

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.seconds += time.perf_counter() - self.started

    return Timer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SEED_TASKS)
    parser.add_argument("--text", type=Path, default=None, help='a JSONL of {"text": ...}: wrapped blocks, every token')
    parser.add_argument("--base", default="default", help="adapterbench's base reference (a model dir, 'default')")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (smoke run)")
    parser.add_argument("--output-dir", type=Path, default=None, help="Trainer's output_dir (nothing is saved)")
    parser.add_argument("--save-adapter", type=Path, default=None,
                        help="save the trained adapter here (a PEFT dir), for bench/training_set_loss.py")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                        help="compute dtype; auto resolves as adapterbench's trainer does on this machine")
    args = parser.parse_args()
    data = args.text or args.data
    if not data.is_file():
        print(f"skipped: {data} is not present", file=sys.stderr)
        return

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from adapterbench.adapters.models import resolve_dtype, resolve_model
    from adapterbench.training.loop import peak_gpu_memory, rss_mb

    path = resolve_model(args.base)
    dtype = resolve_dtype(args.dtype, args.device)
    placement = {"device_map": {"": args.device}} if args.device != "cpu" else {}  # on a CPU: loaded as always
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.text:
        rows = [{"text": json.loads(line)["text"]} for line in args.text.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        shape = {"packing": True, "packing_strategy": "wrapped", "dataset_text_field": "text"}
    else:
        rows, shape = read_pairs(args.data), {"completion_only_loss": True}
    config = SFTConfig(
        output_dir=str(args.output_dir or tempfile.mkdtemp(prefix="trl-peer-")), **shape,
        gradient_checkpointing=True, bf16=dtype == torch.bfloat16, max_length=args.max_length,
        per_device_train_batch_size=args.batch_size, num_train_epochs=1, max_steps=args.max_steps, learning_rate=2e-4,
        lr_scheduler_type="constant", optim="adamw_torch", max_grad_norm=0.3, logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to=[], use_cpu=args.device == "cpu", seed=0, dataloader_num_workers=0)
    peft_config = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    steps = step_timer(torch.cuda.synchronize if args.device == "cuda" else lambda: None)
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its log dicts; stdout carries only the result
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=peft_config, callbacks=[steps])
        masks = {} if args.text else check_completion_only(trainer.train_dataset, tokenizer)
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        assert max(lengths) <= args.max_length

        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    if args.save_adapter:
        trainer.model.save_pretrained(str(args.save_adapter))

    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "step" in entry]
    losses = [float(entry["loss"]) for entry in logs]
    seen = int(next((e["num_tokens"] for e in reversed(trainer.state.log_history) if "num_tokens" in e), 0))
    # Full epoch: the tokens trained on are every prepared example's length; TRL's own counter must agree.
    tokens = sum(lengths) if args.max_steps < 0 else seen
    if args.max_steps < 0 and seen and seen != tokens:
        print(f"warning: TRL counted {seen} tokens, the prepared dataset holds {tokens}", file=sys.stderr)
    gpu = peak_gpu_memory()  # as adapterbench's manifest counts it: the process's peak, the loaded model included
    print(json.dumps({
        "tokens": tokens, "train_seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 2),
        "step_seconds": round(steps.seconds, 3), "tokens_per_step_second": round(tokens / steps.seconds, 2),
        "peak_rss_mb": round(rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), 1), **gpu,
        "steps": trainer.state.global_step, "losses": losses,
        "trl_version": trl.__version__, "dtype": str(dtype).removeprefix("torch."), "examples": len(lengths),
        "dataset_tokens": sum(lengths),
        "trl_num_tokens": seen, **masks, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
