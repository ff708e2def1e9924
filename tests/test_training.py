"""The trainer on a tiny model: it learns, masks prompts, resumes exactly (from checkpoints that load without
unpickling; starting over when killed before the first), stops early, keeps K checkpoints, keeps learning after 4-bit
evaluations, stops on a NaN loss, gradient or update before anything is saved, and writes adapter configs
canonically."""

from __future__ import annotations

import json
import os
import sys
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


def curve_steps(store_file: Path, run_dir: Path) -> list[int]:
    from adapterbench.harness import database

    with database.connect(store_file) as conn:
        return sorted(row["step"] for row in conn.execute(
            "SELECT step FROM evaluations WHERE kind = 'train_step' AND train_run = ?", (str(run_dir.resolve()),)))


def die_at_checkpoint(monkeypatch, step: int, *, after_saving: bool):
    """Make the trainer's checkpoint save at `step` die (before or after writing it), like a kill there."""
    import adapterbench.training.loop as loop

    real_save = loop.save_checkpoint

    def save_then_die(run_dir, at, *args):
        if at == step and not after_saving:
            raise KeyboardInterrupt
        path = real_save(run_dir, at, *args)
        if at == step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(loop, "save_checkpoint", real_save)


def test_resume_before_the_first_checkpoint_starts_over_and_a_rerun_over_checkpoints_is_refused(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    cfg = config(tiny_model_dir, tmp_path, max_steps=4, **{"checkpoint.every": 2, "eval.every": 1})
    store_file = tmp_path / "s.sqlite"
    restore = die_at_checkpoint(monkeypatch, 2, after_saving=False)  # killed before its first checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store=store_file, show_progress=False)
    restore()
    assert curve_steps(store_file, tmp_path / "run") == [0, 1, 2]
    capsys.readouterr()
    train(cfg, resume=True, store=store_file, show_progress=False)
    assert "has no checkpoint yet; starting from step 0" in capsys.readouterr().err
    assert [(line["kind"], line["step"]) for line in metrics_lines(tmp_path / "run")][:3] == [
        ("eval", 0), ("train", 1), ("eval", 1)]
    assert curve_steps(store_file, tmp_path / "run") == [0, 1, 2, 3, 4]  # the killed run's points replaced
    with pytest.raises(UserError, match="already has checkpoints"):
        train(cfg, store=store_file, show_progress=False)


def test_a_resumed_run_leaves_one_curve_point_per_step_in_the_store(tiny_model_dir, tmp_path, monkeypatch):
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, **{"checkpoint.every": 3, "eval.every": 2})
    store_file = tmp_path / "s.sqlite"
    restore = die_at_checkpoint(monkeypatch, 6, after_saving=False)  # evaluated at 4 and 6 after checkpoint 3
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store=store_file, show_progress=False)
    restore()
    assert curve_steps(store_file, tmp_path / "run") == [0, 2, 4, 6]
    train(cfg, resume=True, store=store_file, show_progress=False)
    assert curve_steps(store_file, tmp_path / "run") == [0, 2, 4, 6]
    assert [line["step"] for line in metrics_lines(tmp_path / "run") if line["kind"] == "eval"] == [0, 2, 4, 6]


class RunsCode:
    """A pickle that runs code when unpickled: what a shared run dir could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_load_without_unpickling_and_pickled_ones_are_refused(tiny_model_dir, tmp_path):
    import numpy as np

    from adapterbench.training.checkpoints import STATE_FILE

    cfg = config(tiny_model_dir, tmp_path, max_steps=2, **{"checkpoint.every": 2, "data.val": None})
    train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    state_file = tmp_path / "run" / "checkpoints" / "step-000002" / STATE_FILE
    saved = torch.load(state_file, weights_only=True)  # tensors and plain containers only
    assert saved["state"]["step"] == 2 and saved["rng"][0]["python"][1].numel() == 625

    marker = tmp_path / "code-ran"
    torch.save({**saved, "optimizer": RunsCode(marker)}, state_file)
    with pytest.raises(UserError, match="holds pickled objects, not only tensors"):
        train(cfg, resume=True, store=tmp_path / "s.sqlite", show_progress=False)
    assert not marker.exists()

    old = {key: value for key, value in saved.items() if key != "format"}  # what adapterbench wrote before
    old["rng"] = [{"python": __import__("random").getstate(), "numpy": np.random.get_state(),
                   "torch": torch.get_rng_state()}]
    torch.save(old, state_file)
    with pytest.raises(UserError, match="holds pickled objects"):
        train(cfg, resume=True, store=tmp_path / "s.sqlite", show_progress=False)


def test_the_trainer_writes_adapter_config_canonically(tiny_model_dir, tmp_path):
    from adapterbench.adapters.identity import canonical_config

    train(config(tiny_model_dir, tmp_path, max_steps=2, **{"checkpoint.every": 2, "data.val": None}),
          store=tmp_path / "s.sqlite", show_progress=False)
    for folder in ("adapter", "best", "checkpoints/step-000002"):
        text = (tmp_path / "run" / folder / "adapter_config.json").read_text()
        assert text == canonical_config(json.loads(text)), folder
        modules = json.loads(text)["target_modules"]
        assert modules == sorted(modules) and len(modules) == 14  # 7 linear layers in each of 2 blocks


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


def poison_gradient_at(step: int):
    """The loss stays finite but its gradient is NaN: the update would make every weight NaN."""
    import adapterbench.training.loop as loop

    real_forward = loop.CompletionLoss.forward
    calls = {"n": 0}

    def forward(self, input_ids, attention_mask, labels):
        summed, count = real_forward(self, input_ids, attention_mask, labels)
        if self.training:
            calls["n"] += 1
            if calls["n"] == step:
                summed.register_hook(lambda grad: grad * float("nan"))
        return summed, count

    return forward


def poison_update_at(step: int):
    """A finite loss and gradient, but an update that overflows the weights."""
    import adapterbench.training.loop as loop

    real_make = loop.make_optimizer

    def make(config, params):
        optimizer = real_make(config, params)
        calls = {"n": 0}

        def overflow(*_):
            calls["n"] += 1
            if calls["n"] == step:
                with torch.no_grad():
                    params[0].fill_(float("inf"))

        optimizer.register_step_post_hook(overflow)
        return optimizer

    return make


@pytest.mark.parametrize("poison, expected", [("gradient", "gradient norm became nan"),
                                              ("update", "adapter weights became NaN/inf")])
def test_a_poisoned_update_is_never_checkpointed_or_named_last_good(tiny_model_dir, tmp_path, monkeypatch, poison,
                                                                    expected):
    import adapterbench.training.loop as loop

    if poison == "gradient":
        monkeypatch.setattr(loop.CompletionLoss, "forward", poison_gradient_at(2))
    else:
        monkeypatch.setattr(loop, "make_optimizer", poison_update_at(2))
    # evaluated every step, on a suite with bootstrapped (BLEU) stderr: nothing may be scored or saved after it
    cfg = config(tiny_model_dir, tmp_path, max_steps=4, **{
        "checkpoint.every": 1, "eval.every": 1, "eval.suite": str(SAMPLE / "suite.yaml"), "eval.tasks": ["qa"],
        "eval.limit": 2})
    with pytest.raises(UserError, match=rf"{expected} at step 2; .*step-000001"):
        train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-000001"]
    for folder in ("checkpoints/step-000001", "best"):
        assert all(bool(torch.isfinite(t).all()) for t in adapter_tensors(tmp_path / "run" / folder).values())
    assert [line["step"] for line in metrics_lines(tmp_path / "run")] == [0, 1, 1]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_per_sample_value_gives_a_nan_stderr_not_a_crash(bad):
    """What a diverged model's scores reach: statistics.stdev raised AttributeError ('numerator') on them."""
    import math

    from adapterbench.harness.stats import bootstrap_stderr

    stderr = bootstrap_stderr([1.0, 2.0, bad, 3.0], lambda items: sum(items) / len(items))
    assert math.isnan(stderr)
    assert bootstrap_stderr([1.0, 2.0, 3.0], lambda items: sum(items) / len(items)) > 0


def test_run_dir_holds_peft_dirs_manifest_and_curves(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adapterbench.harness import database

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
    with database.connect(tmp_path / "s.sqlite") as conn:
        points = database.list_evaluations(conn, kind="train_step")
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

    from adapterbench.harness import database

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
    with database.connect(tmp_path / "two.sqlite") as conn:
        assert len(database.list_evaluations(conn, kind="train_step")) == 3
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


def test_peak_memory_is_read_in_the_unit_each_platform_reports():
    import resource
    import sys

    from adapterbench.training.loop import rss_mb

    assert rss_mb(3 * 1024 * 1024, "darwin") == 3.0  # macOS: bytes
    assert rss_mb(3 * 1024, "linux") == 3.0  # Linux: kilobytes
    if sys.platform.startswith("linux"):  # the kernel's own peak (VmHWM, kB) as the oracle for this process
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
        peak = rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        assert peak == pytest.approx(int(status["VmHWM"].split()[0]) / 1024, rel=0.05)


def test_peak_gpu_memory_is_reported_in_mib_only_where_cuda_ran(monkeypatch):
    import torch

    from adapterbench.training.loop import peak_gpu_memory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # CUDA present, this process never used it
    assert peak_gpu_memory() == {}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 6 * 2**30 + 2**19)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: 7 * 2**30)
    assert peak_gpu_memory() == {"peak_gpu_mb": 6144.5, "peak_gpu_reserved_mb": 7168.0}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_step_memory_goes_back_to_the_os():
    from adapterbench.training.loop import _malloc_trim, return_freed_memory

    if _malloc_trim() is None:
        pytest.skip("this libc has no malloc_trim")

    def rss_mb_now() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    blocks = [bytearray(b"x" * 100_000) for _ in range(2000)]  # 200 MB under the mmap threshold: on the heap
    pinned = bytearray(100_000)  # the heap's top stays in use, so glibc cannot just shrink it
    held = rss_mb_now()
    del blocks
    return_freed_memory()
    assert rss_mb_now() < held - 150
    del pinned


def test_freed_memory_goes_back_every_few_steps_not_every_step(tiny_model_dir, tmp_path, monkeypatch):
    import adapterbench.training.loop as loop

    handed_back = []
    monkeypatch.setattr(loop, "return_freed_memory", lambda: handed_back.append(True))
    cfg = config(tiny_model_dir, tmp_path, max_steps=2 * loop.FREED_MEMORY_EVERY + 1, **{"data.val": None})
    train(cfg, store=tmp_path / "s.sqlite", show_progress=False)
    assert len(handed_back) == 2
