"""Model resolution, atomic GGUF conversion, loading in a dtype or NF4, and `models info`."""

from __future__ import annotations

import json
import os

import pytest
import torch

from adapterbench.adapters import models
from adapterbench.digest import file_sha256
from adapterbench.errors import UserError


def test_local_hf_dir_resolves_to_itself(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir


@pytest.mark.parametrize("ref, expected", [
    ("no/such/dir-or-id", "hub ids need ADAPTERBENCH_ALLOW_NETWORK=1"),
    ("missing.gguf", "GGUF file not found"),
])
def test_unresolvable_reference_is_a_user_error(ref, expected, monkeypatch):
    monkeypatch.delenv("ADAPTERBENCH_ALLOW_NETWORK", raising=False)
    with pytest.raises(UserError, match=expected):
        models.resolve_model(ref)


def test_dir_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_model(str(tmp_path))


def test_failed_conversion_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERBENCH_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(Exception):
        models.convert_gguf(gguf)
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == [".locks"]


def test_leftover_temp_dir_is_not_taken_for_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERBENCH_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    target_name = f"m-{file_sha256(gguf)[:12]}"
    # What a killed conversion leaves: the final name without its completion mark.
    (tmp_path / "home" / "models" / target_name).mkdir(parents=True)
    with pytest.raises(Exception):
        models.convert_gguf(gguf)  # it tries to convert again instead of returning the empty dir


def test_a_conversion_waits_for_one_in_progress_and_takes_its_cache(tmp_path, monkeypatch):
    import threading

    from filelock import FileLock
    from transformers import AutoTokenizer

    monkeypatch.setenv("ADAPTERBENCH_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    target = tmp_path / "home" / "models" / f"m-{file_sha256(gguf)[:12]}"
    (target.parent / ".locks").mkdir(parents=True)
    converted = []
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: converted.append(a))
    results = []
    with FileLock(target.parent / ".locks" / f"{target.name}.lock"):  # another process converting
        waiting = threading.Thread(target=lambda: results.append(models.convert_gguf(gguf)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # it waits for the lock
        target.mkdir()
        (target / models._COMPLETE_MARK).write_text("the other process's")
    waiting.join(10)
    assert results == [target] and not converted
    assert (target / models._COMPLETE_MARK).read_text() == "the other process's"


@pytest.mark.parametrize("dtype, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_load_model_in_requested_dtype(tiny_model_dir, dtype, expected):
    model, tokenizer = models.load_model(str(tiny_model_dir), dtype=dtype)
    assert model.dtype == expected
    assert not model.training
    assert tokenizer.pad_token is not None


def test_auto_dtype_follows_cpu_bf16_support(monkeypatch):
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert models.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert models.resolve_dtype("auto", "cpu") == torch.float32


def test_unknown_dtype_and_quant_are_user_errors(tiny_model_dir):
    with pytest.raises(UserError, match="unknown dtype"):
        models.resolve_dtype("fp16")
    with pytest.raises(UserError, match="unknown quant"):
        models.load_model(str(tiny_model_dir), quant="int8")


def test_nf4_load_quantizes_linear_layers_and_runs(tiny_model_dir):
    import bitsandbytes as bnb

    model, tokenizer = models.load_model(str(tiny_model_dir), quant="nf4", dtype="bf16")
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "nf4"
    assert q_proj.weight.quant_state.nested  # double quantization
    ids = tokenizer("LoRA freezes the weights", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert torch.isfinite(logits).all()


def test_model_info_reads_files_without_loading(tiny_model_dir):
    info = models.model_info(str(tiny_model_dir))
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["chat_template"] is True
    from transformers import AutoModelForCausalLM

    expected = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    assert info["parameters"] == expected
    assert info["cached"] is False


def test_models_info_cli_prints_json(tiny_model_dir, capsys):
    from adapterbench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["models", "info", str(tiny_model_dir), "--json"])
    assert exit_.value.code == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "llama"


@pytest.mark.slow
def test_default_model_converts_once_and_loads_offline(monkeypatch):
    """The embedded SmolLM2-135M-Instruct: converted into the shared cache (first run), then loaded from it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = models.resolve_model("default")
    assert (path / models._COMPLETE_MARK).is_file()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    model, tokenizer = models.load_model("default", dtype="fp32")
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template
    info = models.model_info("default")
    assert info["parameters"] == 134_515_008


def test_loading_caps_onednn_kernel_caches_unless_the_user_set_them(tiny_model_dir, monkeypatch):
    """oneDNN reads its cache capacities once, when it first computes: load_model sets them before that (a QLoRA
    run's memory grew with every new batch shape under the defaults), and a user's own value stays."""
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "")  # registered, so the value load_model sets is undone
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    models.load_model(str(tiny_model_dir), dtype="fp32")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == models.KERNEL_CACHE_CAPACITIES[
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"
