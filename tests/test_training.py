"""The trainer on a tiny model: it learns, masks prompts, resumes exactly, stops early, keeps K checkpoints, keeps
learning after 4-bit evaluations, and stops on a NaN without touching the last good checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterbench.config import TrainConfig
from adapterbench.errors import UserError
from adapterbench.training import train
from adapterbench.training.collate import IGNORE, instruction_example

SAMPLE = Path(__file__).resolve().parents[1] / "adapterbench" / "sample"


def config(tiny_model_dir, tmp_path, name="run", **overrides) -> TrainConfig:
    raw = {"base_model": str(tiny_model_dir), "quant": "none", "dtype": "fp32",
           "data": {"format": "instruction", "train": str(SAMPLE / "data" / "qa_train.jsonl"),
                    "val": str(SAMPLE / "data" / "qa_val.jsonl")},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "lr": 2e-3, "batch_size": 4, "max_length": 128,
           "max_steps": 6, "out": str(tmp_path / name)}
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.model_validate(raw)


def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_dir: Path) -> list[float]:
    return [line["train_loss"] for line in metrics_lines(run_dir) if line["kind"] == "train"]


def adapter_tensors(path: Path) -> dict:
    return load_file(path / "adapter_model.safetensors")


def test_loss_falls_on_a_small_text_set(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, max_steps=30, lr=5e-3, **{
        "data.format": "text", "data.train": str(SAMPLE / "data" / "notes_train.jsonl"), "data.val": None})
    train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    losses = train_losses(tmp_path / "run")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3


def test_instruction_labels_cover_the_response_only(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    example = instruction_example({"instruction": "What does LoRA freeze?", "input": "",
                                   "output": "The pretrained weights."}, tokenizer, 256)
    supervised = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
    masked = [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE]
    assert tokenizer.decode(supervised).startswith("The pretrained weights.<|im_end|>")
    assert "What does LoRA freeze?" in tokenizer.decode(masked) and "<|im_start|>assistant" in tokenizer.decode(masked)
    assert example["input_ids"][:len(masked)] == masked  # the mask is a prefix: the prompt


def test_data_with_every_label_masked_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="no label is left to learn from"):
        train(config(tiny_model_dir, tmp_path, max_length=10), store=tmp_path / "s.sqlite", show_progress=False)
    assert not (tmp_path / "run" / "adapter").exists()


def test_resume_ends_with_the_same_adapter_as_an_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch):
    common = {"lora.dropout": 0.2, "scheduler": "cosine", "warmup_steps": 2, "max_steps": 8,
              "checkpoint.every": 3, "eval.every": 3}
    train(config(tiny_model_dir, tmp_path, "whole", **common), store=tmp_path / "s.sqlite", show_progress=False)

    import adapterbench.training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(run_dir, step, *args):
        path = real_save(run_dir, step, *args)
        if step == 3:
            raise KeyboardInterrupt  # killed right after its first checkpoint
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    cut = config(tiny_model_dir, tmp_path, "cut", **common)
    with pytest.raises(KeyboardInterrupt):
        train(cut, store=tmp_path / "s.sqlite", show_progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train(cut, resume=True, store=tmp_path / "s.sqlite", show_progress=False)

    whole, resumed = adapter_tensors(tmp_path / "whole" / "adapter"), adapter_tensors(tmp_path / "cut" / "adapter")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert train_losses(tmp_path / "whole") == train_losses(tmp_path / "cut")


def test_resume_without_a_checkpoint_and_a_rerun_over_checkpoints_are_refused(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, max_steps=2, **{"checkpoint.every": 1})
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        train(cfg, resume=True, store=tmp_path / "s.sqlite", show_progress=False)
    train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    with pytest.raises(UserError, match="already has checkpoints"):
        train(cfg, store=tmp_path / "s.sqlite", show_progress=False)


def test_early_stopping_fires_after_patience_runs_out(tiny_model_dir, tmp_path):
    # val_loss falls as it learns, so asking for its maximum sees no gain after the baseline
    cfg = config(tiny_model_dir, tmp_path, max_steps=40, **{
        "eval.every": 2, "early_stopping": {"metric": "val_loss", "mode": "max", "patience": 2}})
    manifest = train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    assert manifest["stats"]["stopped_early"] and manifest["stats"]["steps"] == 4
    assert manifest["best"]["step"] == 0
    assert (tmp_path / "run" / "best" / "adapter_model.safetensors").is_file()


def test_only_the_last_k_checkpoints_remain_when_the_best_has_none(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, max_steps=10, **{
        "checkpoint.every": 2, "checkpoint.keep": 2, "eval.every": 2,
        "early_stopping": {"metric": "val_loss", "mode": "max", "patience": 100}})
    train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    remaining = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert remaining == ["step-000008", "step-000010"]  # the best is step 0, which has no checkpoint


def test_best_checkpoint_survives_pruning(tiny_model_dir, tmp_path):
    from adapterbench.training.checkpoints import prune_checkpoints

    root = tmp_path / "run" / "checkpoints"
    for step in (2, 4, 6, 8):
        (root / f"step-{step:06d}").mkdir(parents=True)
        (root / f"step-{step:06d}" / "trainer_state.pt").write_bytes(b"x")
    (root / ".step-000010.abc").mkdir()  # what a killed save leaves
    prune_checkpoints(tmp_path / "run", keep=2, best_step=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "step-000006", "step-000008"]


def test_4bit_training_after_evaluations_matches_training_without_them(tiny_model_dir, tmp_path):
    """bitsandbytes repacks 4-bit weights for inference on CPUs with AVX512-BF16; evaluating mid-run (eval mode,
    the harness's scoring and generation) must not change what training does next."""
    nf4 = {"quant": "nf4", "dtype": "bf16", "max_steps": 6}
    train(config(tiny_model_dir, tmp_path, "plain", **nf4), store=tmp_path / "s.sqlite", show_progress=False)
    with_evals = config(tiny_model_dir, tmp_path, "evals", **nf4, **{
        "eval.every": 2, "eval.suite": str(SAMPLE / "suite.yaml"), "eval.tasks": ["notes_mc", "qa"], "eval.limit": 2})
    train(with_evals, store=tmp_path / "s.sqlite", show_progress=False)
    plain, evaluated = train_losses(tmp_path / "plain"), train_losses(tmp_path / "evals")
    assert plain == evaluated
    evals = [json.loads(line) for line in (tmp_path / "evals" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2, 4, 6]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it kept learning across the evaluations
    a, b = adapter_tensors(tmp_path / "plain" / "adapter"), adapter_tensors(tmp_path / "evals" / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in b.items() if "lora_B" in k)  # it learned something


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import adapterbench.training.loop as loop

    real_forward = loop.CompletionLoss.forward
    calls = {"n": 0}

    def poisoned(self, input_ids, attention_mask, labels):
        summed, count = real_forward(self, input_ids, attention_mask, labels)
        calls["n"] += 1
        return (summed * float("nan") if calls["n"] == 4 and self.training else summed), count

    monkeypatch.setattr(loop.CompletionLoss, "forward", poisoned)
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, **{"checkpoint.every": 2, "data.val": None})
    with pytest.raises(UserError, match=r"loss became nan at step 4.*step-000002"):
        train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002"]
    assert set(adapter_tensors(tmp_path / "run" / "checkpoints" / "step-000002"))  # loads: not corrupt
    assert not (tmp_path / "run" / "adapter").exists()


def test_run_dir_holds_peft_dirs_manifest_and_curves(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adapterbench.harness import store

    cfg = config(tiny_model_dir, tmp_path, max_steps=4, **{"eval.every": 2})
    manifest = train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    run = tmp_path / "run"
    for name in ("adapter", "best"):
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / name)
    saved = json.loads((run / "manifest.json").read_text())
    assert saved["config"]["lora"]["r"] == 4 and saved["seed"] == 0
    assert saved["data"]["train"]["sha256"] and saved["base"]["sha256"]
    assert saved["stats"]["tokens_seen"] > 0 and saved["stats"]["peak_rss_mb"] > 0
    assert saved["environment"]["packages"]["peft"]
    assert "val_loss" in saved["final_metrics"] and manifest == saved
    with store.connect(tmp_path / "s.sqlite") as conn:
        points = store.list_evaluations(conn, kind="train_step")
    assert len(points) == 3  # steps 0, 2, 4


def test_train_cli_accepts_overrides_and_reports(tiny_model_dir, tmp_path, capsys):
    from adapterbench.cli import main

    path = tmp_path / "train.yaml"
    path.write_text(f"base_model: {tiny_model_dir}\nquant: none\ndtype: fp32\n"
                    f"data: {{format: instruction, train: {SAMPLE}/data/qa_train.jsonl}}\nmax_steps: 50\nout: cli\n")
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(path), "max_steps=2", "lora.r=2", "--store", str(tmp_path / "s.sqlite")])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("trained 2 steps")
    assert json.loads((tmp_path / "cli" / "adapter" / "adapter_config.json").read_text())["r"] == 2
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(path), "lora.rank=2"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_global_batch(tiny_model_dir, tmp_path):
    """`accelerate launch` with 2 CPU processes (DDP over gloo): the main process alone writes one line per step
    and one curve point per evaluation, and each step's loss and the adapter match a 1-process run of the same
    batches (each process forwards half of every batch, in several micro-batches; only the float order differs)."""
    import os
    import socket
    import subprocess
    import sys

    import yaml

    from adapterbench.harness import store

    common = {"max_steps": 3, "grad_accum": 2, "micro_batch_tokens": 100, "eval.every": 2}
    train(config(tiny_model_dir, tmp_path, "one", **common), store=tmp_path / "one.sqlite", show_progress=False)
    two = config(tiny_model_dir, tmp_path, "two", **common)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two.model_dump(mode="json")))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    # `--cpu --num_processes 2` would start one process (accelerate's multi-CPU launch is mpirun's); --multi_gpu
    # starts them through torchrun, and train() takes DDP over gloo where there is no GPU
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(port), "-m", "adapterbench", "train", str(tmp_path / "two.yaml"),
              "--store", str(tmp_path / "two.sqlite")]
    done = subprocess.run(launch, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "two"
    assert [(line["kind"], line["step"]) for line in metrics_lines(run)] == [
        ("eval", 0), ("train", 1), ("train", 2), ("eval", 2), ("train", 3), ("eval", 3)]
    assert json.loads((run / "manifest.json").read_text())["stats"]["processes"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "best", "checkpoints", "manifest.json",
                                                     "metrics.jsonl"]
    with store.connect(tmp_path / "two.sqlite") as conn:
        assert len(store.list_evaluations(conn, kind="train_step")) == 3
    assert train_losses(run) == pytest.approx(train_losses(tmp_path / "one"), rel=1e-6)
    grad_norms = [[line["grad_norm"] for line in metrics_lines(path) if line["kind"] == "train"]
                  for path in (tmp_path / "one", run)]
    assert grad_norms[1] == pytest.approx(grad_norms[0], rel=1e-5)  # the processes' parts add up to the step's
    # Adam divides by the root of the squared gradient, so a tiny gradient's float noise moves its weight by up to
    # lr: compare whole tensors, not elements
    one, two_ = adapter_tensors(tmp_path / "one" / "adapter"), adapter_tensors(run / "adapter")
    assert all((one[k] - two_[k]).norm() <= 1e-4 * one[k].norm() for k in one)


@pytest.mark.parametrize("quant,dtype,rel", [("none", "fp32", 1e-5), ("nf4", "bf16", 0.0)])
def test_training_evaluations_give_the_numbers_eval_gives_for_the_same_adapter(tiny_model_dir, tmp_path, quant, dtype,
                                                                               rel):
    """The curve's last point and `adapterbench eval` of the final adapter (quant read from the manifest) agree:
    exactly on a 4-bit base (both run LoRA beside it under bf16 autocast); in float32 up to the rounding by which
    merged (eval) and unmerged (training) LoRA differ."""
    from adapterbench.harness.evaluate import evaluate

    tasks = ["notes_mc", "notes_ppl", "qa"]
    cfg = config(tiny_model_dir, tmp_path, max_steps=2, quant=quant, dtype=dtype, **{
        "eval.every": 2, "eval.suite": str(SAMPLE / "suite.yaml"), "eval.tasks": tasks, "eval.limit": 3})
    train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    last = [line for line in metrics_lines(tmp_path / "run") if line["kind"] == "eval"][-1]
    evaluation = evaluate(SAMPLE / "suite.yaml", base=str(tiny_model_dir), adapters={"run": str(tmp_path / "run" /
                                                                                                "adapter")},
                          tasks=tasks, limit=3, dtype=dtype, save=False)
    assert evaluation["config"]["quant"] == quant
    scored = {f"{r['task']}/{r['metric']}": r["value"] for r in evaluation["scores"] if r["label"] == "run"}
    shared = [key for key in scored if key in last]
    assert {"notes_mc/acc", "notes_ppl/word_perplexity", "qa/bleu", "qa/rougeL_f1"} <= set(shared)
    for key in shared:
        assert scored[key] == pytest.approx(last[key], rel=rel, abs=0), key
    base = {f"{r['task']}/{r['metric']}": r["value"] for r in evaluation["scores"] if r["label"] == "base"}
    assert base["notes_ppl/word_perplexity"] != pytest.approx(scored["notes_ppl/word_perplexity"], rel=1e-5)
