"""Benchmark: QLoRA training speed and memory, `adapterbench train` against TRL's `SFTTrainer` (bench/trl_sft_peer.py),
each in its own process so that peak RSS is per side. Reports training tokens/s (non-padding input tokens over the
training loop's wall time, model loading excluded) and the ratio ours/TRL (goal >= 4), peak RSS and the ratio
ours/TRL (goal <= 0.7), and the final loss of each with their relative difference (goal within 2%): each trained
adapter's mean loss over the whole training set after training, on the same examples (bench/training_set_loss.py,
in a process of its own after both runs).

Workload (skipped cleanly when ../shared/data is absent): the default model (SmolLM2-135M-Instruct) in NF4 with double
quantization, both sides computing in the dtype `auto` picks on this CPU (bf16 with AVX512-BF16 or AMX, else fp32);
LoRA r=16, alpha=16, dropout 0.05 on all linear layers; the 175 Self-Instruct seed tasks (prompt = instruction +
"\\n\\n" + input, response = output) under the chat template, loss on the response only, max length 256;
AdamW, constant LR 2e-4, grad-norm clip 0.3, batch 4, 1 epoch, seed 0.

    .venv/bin/pip install -c constraints.txt trl                # the peer; benchmark-only (trl 1.16.0)
    .venv/bin/python bench/train_speed.py [--skip-peer | --reuse-peer] [--gradient-checkpointing] [--steps N]
                                          [--out bench/out/train]

--steps N is a smoke run: both sides stop after N optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SEED_TASKS = SHARED / "self_instruct_seed_tasks.jsonl"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
GOALS = {"speedup": 4.0, "rss_ratio": 0.7, "loss_rel_diff": 0.02}


def write_data(out: Path) -> Path:
    """The seed tasks as instruction/input/output records, the file both sides train on."""
    rows = []
    for line in SEED_TASKS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            task = json.loads(line)
            first = task["instances"][0]
            rows.append({"id": task["id"], "instruction": task["instruction"], "input": first.get("input", ""),
                         "output": first["output"]})
    path = out / "selfinstruct.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def run_ours(data: Path, out: Path, steps: int | None, checkpointing: bool = False) -> dict:
    ours = out / "ours"
    shutil.rmtree(ours / "run", ignore_errors=True)
    ours.mkdir(parents=True, exist_ok=True)
    length = f"max_steps: {steps}" if steps else "epochs: 1"
    config = ours / "train.yaml"
    config.write_text(f"base_model: default\ndata: {{format: instruction, train: {json.dumps(str(data))}}}\n"
                      "lora: {r: 16, alpha: 16, dropout: 0.05}\nquant: nf4\nlr: 2.0e-4\nscheduler: constant\n"
                      f"max_grad_norm: 0.3\nbatch_size: 4\nmax_length: 256\n{length}\nseed: 0\n"
                      f"gradient_checkpointing: {json.dumps(checkpointing)}\n"
                      f"out: {json.dumps(str(ours / 'run'))}\n")
    log = ours / "train.log"
    with open(log, "w") as f:
        code = subprocess.run([str(BIN / "adapterbench"), "train", str(config)], stdout=f, stderr=subprocess.STDOUT,
                              env=ENV).returncode
    manifest = ours / "run" / "manifest.json"
    if code != 0 or not manifest.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        return {"error": f"adapterbench train exited {code}" + ("" if manifest.is_file() else ", no manifest.json")
                + f"; see {log}", "log_tail": tail}
    stats = json.loads(manifest.read_text())["stats"]
    lines = [json.loads(x) for x in (ours / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [float(x["train_loss"]) for x in lines if "step" in x and "train_loss" in x]
    return {"tokens": stats["tokens_seen"], "train_seconds": stats["train_seconds"],
            "tokens_per_second": stats["tokens_per_second"], "peak_rss_mb": stats["peak_rss_mb"],
            "steps": stats["steps"], "losses": losses, "adapter": str(ours / "run" / "adapter")}


def run_peer(data: Path, out: Path, steps: int | None) -> dict:
    peer = out / "peer"
    peer.mkdir(parents=True, exist_ok=True)
    adapter = peer / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    cmd = [sys.executable, str(REPO / "bench" / "trl_sft_peer.py"), "--data", str(data), "--output-dir",
           str(peer / "trainer"), "--save-adapter", str(adapter)] + (["--max-steps", str(steps)] if steps else [])
    log = peer / "train.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=ENV)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"trl_sft_peer.py exited {proc.returncode}; see {log}",
                "log_tail": log.read_text(errors="replace").strip().splitlines()[-5:]}
    result = {**json.loads(lines[-1]), "adapter": str(adapter)}
    (peer / "result.json").write_text(json.dumps(result, indent=2))
    return result


def add_final_losses(data: Path, sides: list[dict]) -> None:
    """Each side's final_loss: its adapter's mean loss over the whole training set (bench/training_set_loss.py)."""
    sides = [side for side in sides if "error" not in side and "adapter" in side]
    if not sides:
        return
    cmd = [sys.executable, str(REPO / "bench" / "training_set_loss.py"), "--data", str(data)]
    proc = subprocess.run(cmd + [side["adapter"] for side in sides], stdout=subprocess.PIPE, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"training_set_loss.py exited {proc.returncode}")
    losses = json.loads(proc.stdout.splitlines()[-1])
    for side in sides:
        side["final_loss"] = losses[side["adapter"]]["loss"]


def compare(ours: dict, peer: dict) -> dict:
    if "final_loss" not in ours or "final_loss" not in peer:  # a side failed (or a reused peer run has no adapter)
        return {}
    speedup = ours["tokens_per_second"] / peer["tokens_per_second"]
    rss_ratio = ours["peak_rss_mb"] / peer["peak_rss_mb"]
    loss_diff = abs(ours["final_loss"] - peer["final_loss"]) / abs(peer["final_loss"])
    met = {"speedup": speedup >= GOALS["speedup"], "rss_ratio": rss_ratio <= GOALS["rss_ratio"],
           "loss_rel_diff": loss_diff <= GOALS["loss_rel_diff"]}
    return {"speedup": round(speedup, 2), "rss_ratio": round(rss_ratio, 3), "loss_rel_diff": round(loss_diff, 4),
            "goals": GOALS, "met": met}


def run_summary(name: str, side: dict) -> str:
    if "error" in side:
        return f"{name}: FAILED: {side['error']}\n  " + "\n  ".join(side.get("log_tail", []))
    return (f"{name}: {side['tokens_per_second']:.1f} tokens/s ({side['tokens']} tokens in {side['train_seconds']:.1f} "
            f"s, {side['steps']} steps), peak RSS {side['peak_rss_mb']:.0f} MB"
            + (f", final loss over the training set {side['final_loss']:.4f}" if "final_loss" in side else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "train")
    parser.add_argument("--skip-peer", action="store_true", help="run adapterbench only")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="train ours with gradient_checkpointing: true, as the TRL peer trains")
    parser.add_argument("--steps", type=int, default=None, help="smoke run: N optimizer steps on each side")
    parser.add_argument("--reuse-peer", action="store_true",
                        help="compare with the last full peer run (OUT/peer/result.json) instead of running TRL again")
    args = parser.parse_args()
    if not SEED_TASKS.is_file():
        print(f"skipped: the benchmark's data is not present at {SEED_TASKS}")
        return
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = write_data(out)
    from machine import describe, line

    summary = {"machine": describe(), "steps_limit": args.steps}
    print(line(summary["machine"]), flush=True)
    summary["ours"] = run_ours(data, out, args.steps, args.gradient_checkpointing)
    summary["ours"]["gradient_checkpointing"] = args.gradient_checkpointing
    if not args.skip_peer:
        reuse = out / "peer" / "result.json"
        summary["peer"] = (json.loads(reuse.read_text()) if args.reuse_peer and reuse.is_file()
                           else run_peer(data, out, args.steps))
    add_final_losses(data, [summary[side] for side in ("ours", "peer") if side in summary])
    print(run_summary("adapterbench train", summary["ours"]), flush=True)
    if not args.skip_peer:
        print(run_summary(f"TRL SFTTrainer {summary['peer'].get('trl_version', '')}".rstrip(), summary["peer"]))
        summary["comparison"] = compare(summary["ours"], summary["peer"])
        if summary["comparison"]:
            c = summary["comparison"]
            print(f"tokens/s ours/TRL: {c['speedup']:.2f}x (goal >= {GOALS['speedup']}); peak RSS ours/TRL: "
                  f"{c['rss_ratio']:.2f} (goal <= {GOALS['rss_ratio']}); final loss relative difference: "
                  f"{c['loss_rel_diff']:.2%} (goal <= {GOALS['loss_rel_diff']:.0%})")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"written: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
