"""Benchmark on a GPU machine (the `device` tool's): QLoRA training of a randomly initialised 7B-shaped Mistral,
`adapterbench train` against TRL's `SFTTrainer` (seq 512, batch 1: tokens/s and peak GPU memory, against the QLoRA
paper's ~6.9 GB for a 7B model), and scoring a SmolLM2-135M-shaped base + 4 adapters, `adapterbench eval` against
the lm-eval CLI (bench/eval_speed.py's workload, bf16).

That machine reaches no package registry and holds neither the default model nor ../shared/data, so the work is
split in two. Here, `prepare` writes .bench-gpu/ (git-ignored, ~40 MB): the wheels its image lacks (bitsandbytes with
its CUDA 13 libraries only, lm-eval, TRL and their dependencies, transformers and peft at our pins), the default
model's tokenizer and config, the scoring workload's data and the training text. There, `run` builds both bases from
their configs with random weights (speed and memory do not depend on the values; greedy answers run their 48 tokens
on both sides) and runs both benchmarks, writing a summary and the logs into --out after each part:

    .venv/bin/python bench/gpu_speed.py prepare                        # here, once
    # there: two device-tool runs, each with carry [".bench-gpu"] (estimated 5-6 and 2-3 minutes; a run may take 10):
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
        .bench-gpu/wheels/*.whl &&
      PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 bench/gpu_speed.py run --only train --out $OUT
    # ... and the same with --only eval

The 7B model takes the default model's tokenizer, so its vocabulary is 49,152 words (Mistral's 32,000): 7.38B
parameters where Mistral-7B has 7.24B. `run --tiny` runs every step on 2-layer models (on the CPU where there is no
GPU): the script's own smoke run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from train_speed import ENV  # the benchmarks' child processes: offline, tokenizers single-threaded

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PREPARED = REPO / ".bench-gpu"
# What the GPU image (device/KINDS.md's package list) lacks of adapterbench's, lm-eval's and TRL's dependencies,
# plus transformers and peft, carried at our pins whatever versions the image has
WHEELS = ("annotated-types", "bitsandbytes", "chardet", "dataproperty", "datasets", "defusedxml", "dill", "evaluate",
          "gguf", "lm-eval", "mbstrdecoder", "more-itertools", "multiprocess", "nltk", "pathvalidate", "peft",
          "pydantic", "pydantic-core", "pytablewriter", "pytz", "rouge-score", "sqlitedict", "tabledata", "tcolorpy",
          "transformers", "trl", "typepy", "typer", "typing-extensions", "typing-inspection", "word2number")
CUDA_LIBRARIES = ("libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so")  # the image's torch is built for 13.0
MISTRAL_7B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "max_position_embeddings": 4096, "rope_theta": 10000.0}
MISTRAL_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 1024, "rope_theta": 10000.0}
TRAINING_TEXT_CHARS = 400_000  # ~90k tokens of d2l text: more blocks of 512 than any run here trains on


# --- here: what the GPU machine needs ---

def prepare(out: Path) -> None:
    from eval_speed import write_data

    from adapterbench.adapters.models import resolve_model
    from adapterbench.datafiles.reading import read_records

    if not SHARED.is_dir():
        raise SystemExit(f"prepare needs the benchmarks' data at {SHARED}")
    out.mkdir(parents=True, exist_ok=True)
    download_wheels(out / "wheels")
    tokenizer = out / "smollm2"
    tokenizer.mkdir(exist_ok=True)
    default = resolve_model("default")
    for path in default.iterdir():
        if path.suffix in (".json", ".jinja") and path.name != "adapterbench-complete.json":
            shutil.copyfile(path, tokenizer / path.name)
    write_data(out / "suite")
    texts, size = [], 0
    for record in read_records(SHARED / "d2l", "text"):
        texts.append({"text": record["text"]})
        size += len(record["text"])
        if size >= TRAINING_TEXT_CHARS:
            break
    (out / "text.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"prepared {out}: {total / 2**20:.1f} MiB (the device tool carries 64 MiB with the repo)")


def download_wheels(folder: Path) -> None:
    """Each of WHEELS at constraints.txt's pin (TRL, benchmark-only: the version installed here), as a wheel for
    CPython 3.12 on x86-64 Linux (the image's); a package PyPI has as source only is built into a pure-Python wheel
    here."""
    from importlib.metadata import version

    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    pins = {canonical(name): version.strip() for name, version in pins.items()}
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for n in (28, 27, 24, 17) for arg in ("--platform", f"manylinux_2_{n}_x86_64")]
    for name in WHEELS:
        spec = f"{name}=={pins.get(canonical(name)) or version(name)}"
        binary = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                  "3.12", "--implementation", "cp", *platforms, "--platform", "manylinux2014_x86_64", "-d",
                  str(folder), spec]
        if subprocess.run(binary, capture_output=True).returncode != 0:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), spec],
                           check=True)
    for wheel in folder.glob("bitsandbytes-*.whl"):
        keep_cuda_libraries(wheel)


def keep_cuda_libraries(wheel: Path) -> None:
    """bitsandbytes ships a library per CUDA and ROCm version (123 MB); the image needs one (and the CPU's)."""
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            name = Path(item.filename).name
            if name.startswith("libbitsandbytes_") and name not in CUDA_LIBRARIES and "cpu" not in name:
                continue
            target.writestr(item, source.read(item))
    slim.replace(wheel)


def canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


# --- there: the two benchmarks ---

def run(prepared: Path, out: Path, tiny: bool, steps: int, peer_models: int, only: str | None) -> None:
    import torch

    from machine import describe, line

    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/adapterbench-gpu-bench")
    work.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    summary = {"machine": describe(), "tiny": tiny, "device": device, "versions": versions()}
    print(line(summary["machine"]), summary["versions"], flush=True)

    def save():
        (out / "gpu-summary.json").write_text(json.dumps(summary, indent=2))

    summary["preflight"] = preflight()
    save()
    if summary["preflight"] != "ok":
        raise SystemExit(f"preflight failed, nothing was run: {summary['preflight']}")
    tokenizer = prepared / "smollm2"
    if only in (None, "train"):
        base = build_base(tokenizer, work / "mistral", mistral_config(tokenizer, tiny), device)
        summary["train"] = {"base": describe_base(base), "steps": steps}
        text = prepared / "text.jsonl"
        summary["train"]["ours"] = train_ours(base, text, work / "ours", steps, False, out / "train-ours.log")
        save()
        summary["train"]["trl"] = train_trl(base, text, work / "trl", steps, device, out / "train-trl.log")
        save()
        # TRL recomputes activations, as the QLoRA paper's memory figure assumes; ours does not by default
        summary["train"]["ours_checkpointing"] = train_ours(base, text, work / "ours_checkpointing", steps, True,
                                                            out / "train-ours_checkpointing.log")
        summary["train"]["ratios"] = training_ratios(summary["train"])
        save()
        shutil.rmtree(base)
    if only in (None, "eval"):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(tokenizer)
        if tiny:
            config.num_hidden_layers = 2
        base = build_base(tokenizer, work / "smollm2", config, "cpu")
        summary["eval"] = score(base, prepared / "suite", work / "eval", device, peer_models, out)
        save()
    print(json.dumps(summary, indent=2))


def preflight() -> str:
    """Every import the three programs need, and the table lm-eval's CLI prints at its end, before minutes of model
    building: 'ok', or what failed."""
    probe = ("import adapterbench.cli, adapterbench.harness.evaluate, adapterbench.training, bitsandbytes, trl, "
             "lm_eval.__main__, lm_eval.evaluator, rouge_score.rouge_scorer, sacrebleu, nltk\n"
             "from pytablewriter import MarkdownTableWriter\n"
             "MarkdownTableWriter(headers=['a'], value_matrix=[[1]]).dumps()\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV)
    return "ok" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["exit code"])[-1]


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft", "bitsandbytes", "lm_eval", "trl")}


def mistral_config(tokenizer: Path, tiny: bool):
    """Mistral-7B's shape (or a 2-layer one) over the default model's tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    vocabulary = AutoTokenizer.from_pretrained(tokenizer)
    return AutoConfig.for_model("mistral", vocab_size=len(vocabulary), bos_token_id=vocabulary.bos_token_id,
                                eos_token_id=vocabulary.eos_token_id, tie_word_embeddings=False,
                                **(MISTRAL_TINY if tiny else MISTRAL_7B))


def build_base(tokenizer: Path, target: Path, config, device: str) -> Path:
    """A model dir: `config` with random weights in bf16, built on `device`, and the tokenizer of `tokenizer`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    vocabulary = AutoTokenizer.from_pretrained(tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    vocabulary.save_pretrained(target)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    (target / "bench-base.json").write_text(json.dumps({"parameters": parameters,
                                                         "build_seconds": round(time.perf_counter() - started, 1)}))
    return target


def describe_base(base: Path) -> dict:
    config = json.loads((base / "config.json").read_text())
    return {**json.loads((base / "bench-base.json").read_text()),
            **{k: config[k] for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")}}


def train_ours(base: Path, text: Path, work: Path, steps: int, gradient_checkpointing: bool, log: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "train.yaml"
    config.write_text(f"base_model: {json.dumps(str(base))}\ndata: {{format: text, train: {json.dumps(str(text))}}}\n"
                      "lora: {r: 16, alpha: 16, dropout: 0.05}\nquant: nf4\nlr: 2.0e-4\nscheduler: constant\n"
                      f"max_grad_norm: 0.3\nbatch_size: 1\nmax_length: 512\nmax_steps: {steps}\nseed: 0\n"
                      f"gradient_checkpointing: {json.dumps(gradient_checkpointing)}\n"
                      f"out: {json.dumps(str(work / 'run'))}\n")
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-m", "adapterbench", "train", str(config)], stdout=f,
                              stderr=subprocess.STDOUT, env=ENV).returncode
    manifest = work / "run" / "manifest.json"
    if code != 0 or not manifest.is_file():
        return {"error": f"adapterbench train exited {code}; see {log.name}"}
    return json.loads(manifest.read_text())["stats"]


def train_trl(base: Path, text: Path, work: Path, steps: int, device: str, log: Path) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "trl_sft_peer.py"), "--base", str(base), "--text", str(text),
           "--max-length", "512", "--batch-size", "1", "--max-steps", str(steps), "--device", device,
           "--output-dir", str(work)]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=ENV)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"trl_sft_peer.py exited {proc.returncode}; see {log.name}"}
    result = json.loads(lines[-1])
    result.pop("losses", None)
    return result


def training_ratios(train: dict) -> dict:
    """Ours against TRL: tokens/s over the optimizer steps' time on both sides (`train_seconds` in our manifest,
    trl_sft_peer.py's `step_seconds`), and peak GPU memory allocated (peak RSS without a GPU)."""
    peer = train.get("trl", {})
    ratios = {}
    for name in ("ours", "ours_checkpointing"):
        side = train.get(name, {})
        if "error" in side or "error" in peer or not side or not peer:
            continue
        memory = "peak_gpu_mb" if "peak_gpu_mb" in side and "peak_gpu_mb" in peer else "peak_rss_mb"
        ratios[name] = {"tokens_per_second": round(side["tokens_per_second"] / peer["tokens_per_step_second"], 2),
                        memory: round(side[memory] / peer[memory], 3)}
    return ratios


def score(base: Path, data: Path, work: Path, device: str, peer_models: int, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "eval_speed.py"), "--base", str(base), "--data", str(data),
           "--device", device, "--peer-models", str(peer_models), "--out", str(work)]
    with open(out / "eval.log", "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV).returncode
    for log in ("ours-bf16.log", "peer-bfloat16-base.log"):
        if (work / log).is_file():
            shutil.copyfile(work / log, out / f"eval-{log}")
    summary = work / "summary-bfloat16.json"
    if code != 0 or not summary.is_file():
        return {"error": f"eval_speed.py exited {code}; see eval.log"}
    return json.loads(summary.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    here = commands.add_parser("prepare", help="write .bench-gpu/ here (needs ../shared/data and the registries)")
    here.add_argument("--out", type=Path, default=PREPARED)
    there = commands.add_parser("run", help="build the random bases and run both benchmarks (on the GPU machine)")
    there.add_argument("--prepared", type=Path, default=PREPARED)
    there.add_argument("--out", type=Path, required=True, help="where the summary and the logs go")
    there.add_argument("--tiny", action="store_true", help="a 2-layer Mistral and a 2-layer SmolLM2: a smoke run")
    there.add_argument("--steps", type=int, default=40, help="optimizer steps of each training run")
    there.add_argument("--peer-models", type=int, default=2, choices=range(1, 6),
                       help="models the lm-eval CLI scores (it starts afresh for each); the ratio is per model")
    there.add_argument("--only", choices=["train", "eval"], default=None,
                       help="one part; the two parts fit one device call each where both do not fit one")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out)
    else:
        run(args.prepared, args.out, args.tiny, args.steps, args.peer_models, args.only)


if __name__ == "__main__":
    main()
