"""Benchmark: scoring the default model and 4 LoRA adapters on one suite, `adapterbench eval` (one process, base
loaded once) against the way users do it today, the lm-eval CLI run once per model (`--model hf`, bf16, batch 8).

Workload (from ../shared/data; skipped cleanly when absent): 100 four-choice MMLU questions (log-likelihood),
50 d2l paragraphs of 80-120 words (perplexity), 30 Self-Instruct seed tasks (greedy generation, 48 new tokens).
Adapters: random LoRA, r=8, all linear layers. Both sides run the same generated lm-eval YAML with the chat template.

    .venv/bin/python bench/eval_speed.py [--dtype float32] [--skip-peer | --reuse-peer] [--reuse-ours]
                                         [--peer-models K] [--out bench/out/eval] [--base DIR] [--data DIR]
                                         [--device cpu|cuda]

--reuse-peer compares with the last peer run of that dtype (OUT/peer-DTYPE.json) instead of running lm-eval again,
--reuse-ours with the last adapterbench run (OUT/ours-DTYPE.json). --peer-models K runs the lm-eval CLI for the first K
of the 5 models only (base first), where it would take an hour (fp32 on an AVX2-only CPU); the speed-up is then per
model: (peer seconds / K) / (adapterbench seconds / 5). --base scores another base (a model dir) than the default
model, --data takes mc.jsonl, ppl.jsonl and gen.jsonl from a folder written by an earlier run instead of
../shared/data, and --device runs the peer on the GPU (`adapterbench eval` picks it by itself): bench/gpu_speed.py
runs it so on a GPU machine, where neither the default model nor ../shared/data is present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATA_FILES = ("mc.jsonl", "ppl.jsonl", "gen.jsonl")


def write_data(out: Path) -> None:
    """The workload's three data files (DATA_FILES), from ../shared/data."""
    from adapterbench.datafiles.reading import read_records
    from adapterbench.datafiles.writing import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    mc = read_records(SHARED / "mmlu" / "computer_security_test.csv", "multiple_choice")[:100]
    paragraphs = [r for r in read_records(SHARED / "d2l", "text") if 80 <= len(r["text"].split()) <= 120][:50]
    seed_tasks = read_records(SHARED / "self_instruct_seed_tasks.jsonl", "instruction",
                              fields={"input": "instances.0.input", "output": "instances.0.output"})[:30]
    write_jsonl(out / "mc.jsonl", mc)
    write_jsonl(out / "ppl.jsonl", paragraphs)
    write_jsonl(out / "gen.jsonl", seed_tasks)


def prepare(out: Path, base: Path, data: Path | None = None) -> tuple[Path, dict[str, Path]]:
    """Write the workload's data (from ../shared/data, or copied from `data`), suite.yaml and the four adapters of
    `base` (once)."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        write_data(out)
    else:
        for name in DATA_FILES:
            if (data / name).resolve() != (out / name).resolve():
                shutil.copyfile(data / name, out / name)
    suite = out / "suite.yaml"
    suite.write_text("name: bench\ntasks:\n"
                     "  - {name: bench_mc, type: multiple_choice, data: mc.jsonl}\n"
                     "  - {name: bench_ppl, type: perplexity, data: ppl.jsonl}\n"
                     "  - {name: bench_gen, type: generation, data: gen.jsonl, max_new_tokens: 48}\n")
    adapters = {}
    for i in range(4):
        path = out / "adapters" / f"lora{i}"
        if not (path / "adapter_model.safetensors").is_file():
            make_adapter(base, path, seed=i)
        adapters[f"lora{i}"] = path
    return suite, adapters


def make_adapter(base: Path, path: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                  init_lora_weights="gaussian"))
    with torch.no_grad():  # a trained-looking adapter: small non-zero B, so it changes answers without wrecking them
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(path)


def timed(cmd: list[str], log: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)
    return time.perf_counter() - start


def run_ours(suite: Path, adapters: dict[str, Path], out: Path, dtype: str, base: str) -> tuple[float, dict]:
    store = out / f"store-{dtype}.sqlite"
    store.unlink(missing_ok=True)
    result = out / f"ours-{dtype}.json"
    cmd = [sys.executable, "-m", "adapterbench", "eval", str(suite), "--base", str(base), "--dtype", dtype,
           "--store", str(store), "--json",
           *[arg for label, path in adapters.items() for arg in ("--adapter", f"{label}={path}")]]
    seconds = timed(cmd, out / f"ours-{dtype}.log")
    text = (out / f"ours-{dtype}.log").read_text()
    printed = json.loads(text[text.index('{\n  "eval_id"'):])
    result.write_text(json.dumps({**printed, "bench_seconds": seconds}, indent=2))
    return seconds, printed["results"]


def run_peer(suite: Path, adapters: dict[str, Path], out: Path, dtype: str, models: int, base: Path,
             device: str) -> tuple[float, dict]:
    """The lm-eval CLI once per model, for the first `models` of base + adapters."""
    from adapterbench.config import load_suite
    from adapterbench.tasks.compile import build_suite

    task_dir = out / "tasks"
    build_suite(load_suite(suite), task_dir)
    seconds, results = 0.0, {}
    for label, adapter in list({"base": None, **adapters}.items())[:models]:
        model_args = f"pretrained={base},dtype={dtype}" + (f",peft={adapter}" if adapter else "")
        output = out / f"peer-{dtype}-{label}"
        cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", model_args, "--include_path",
               str(task_dir), "--tasks", "bench_mc,bench_ppl,bench_gen", "--batch_size", "8", "--device", device,
               "--apply_chat_template", "--output_path", str(output)]
        seconds += timed(cmd, out / f"peer-{dtype}-{label}.log")
        payload = json.loads(next(output.rglob("results_*.json")).read_text())
        results[label] = {task: {k.split(",")[0]: v for k, v in metrics.items()
                                 if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
                          for task, metrics in payload["results"].items()}
    return seconds, results


def max_relative_difference(ours: dict, peer: dict) -> float:
    worst = 0.0
    for label, tasks in peer.items():  # the models both sides scored
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                mine = ours[label][task][metric]
                scale = max(abs(mine), abs(value), 1e-12)
                worst = max(worst, abs(mine - value) / scale)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "eval")
    parser.add_argument("--skip-peer", action="store_true", help="time adapterbench only")
    parser.add_argument("--reuse-peer", action="store_true",
                        help="compare with the last peer run of this dtype (OUT/peer-DTYPE.json) instead of a new one")
    parser.add_argument("--reuse-ours", action="store_true",
                        help="time the last adapterbench run of this dtype (OUT/ours-DTYPE.json) instead of a new one")
    parser.add_argument("--peer-models", type=int, default=5, choices=range(1, 6),
                        help="run the lm-eval CLI for the first K models only; the speed-up is then per model")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--base", default="default", help="the base: 'default' or a model dir")
    parser.add_argument("--data", type=Path, default=None,
                        help="a folder with mc.jsonl, ppl.jsonl and gen.jsonl (default: written from ../shared/data)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the lm-eval CLI runs")
    args = parser.parse_args()
    if args.data is None and not SHARED.is_dir():
        print(f"skipped: the benchmark's data is not present at {SHARED}")
        return
    from machine import describe, line

    from adapterbench.adapters.models import resolve_model

    machine = describe()
    print(line(machine))
    base = resolve_model(args.base)
    suite, adapters = prepare(args.out, base, args.data)
    ours_dtype = {"bfloat16": "bf16", "float32": "fp32"}[args.dtype]
    saved_ours = args.out / f"ours-{ours_dtype}.json"
    if args.reuse_ours and saved_ours.is_file():
        printed = json.loads(saved_ours.read_text())
        ours_seconds, ours = printed["bench_seconds"], printed["results"]
    else:
        ours_seconds, ours = run_ours(suite, adapters, args.out, ours_dtype, args.base)
    print(f"adapterbench eval ({args.dtype}): {ours_seconds:.1f} s for 5 models")
    summary = {"dtype": args.dtype, "base": args.base, "adapterbench_seconds": round(ours_seconds, 1),
               "machine": machine}
    if not args.skip_peer:
        saved = args.out / f"peer-{args.dtype}.json"
        summary["peer_reused"] = args.reuse_peer and saved.is_file()
        if summary["peer_reused"]:
            reused = json.loads(saved.read_text())
            peer_seconds, peer = reused["seconds"], reused["results"]
        else:
            peer_seconds, peer = run_peer(suite, adapters, args.out, args.dtype, args.peer_models, base,
                                          args.device)
            saved.write_text(json.dumps({"seconds": peer_seconds, "results": peer}, indent=2))
        speedup = (peer_seconds / len(peer)) / (ours_seconds / (1 + len(adapters)))
        summary.update(peer_seconds=round(peer_seconds, 1), peer_models=len(peer),
                       speedup_per_model=round(speedup, 2),
                       max_relative_metric_difference=max_relative_difference(ours, peer))
        print(f"lm-eval CLI, once per model ({args.dtype}): {peer_seconds:.1f} s for {len(peer)} models")
        print(f"speed-up per model: {speedup:.2f}x; largest relative metric difference "
              f"{summary['max_relative_metric_difference']:.2e}")
    (args.out / f"summary-{args.dtype}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
