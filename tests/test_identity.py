"""What names a base and an adapter, and what is refused before a model loads: a base is named by its weights'
content (hashed once, remembered across runs), an adapter by its canonical config and weights; an adapter trained on
another base, and every kind of broken adapter dir, is one line and exit 2 before any model is loaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapterbench.adapters.identity import adapter_identity, canonical_config
from adapterbench.cli import main
from adapterbench.harness import database
from adapterbench.provenance import base_sha

from conftest import build_tiny_model
from test_harness import random_lora

SAMPLE = Path(__file__).resolve().parents[1] / "adapterbench" / "sample" / "data"


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(f"name: one\ntasks:\n  - {{name: mc, type: multiple_choice, data: {SAMPLE}/mc_test.jsonl}}\n")
    return path


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory) -> Path:
    return random_lora(tiny_model_dir, tmp_path_factory.mktemp("lora") / "lora", seed=5)


@pytest.fixture
def no_model_loading(monkeypatch):
    """Every refusal here must come before the base is loaded."""
    from adapterbench.adapters import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()  # what the fixtures printed
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_bases_of_one_architecture_with_other_weights_have_other_identities(tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=1, init_std=0.3)  # same shapes, same file sizes
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert [p.stat().st_size for p in sorted(other.glob("*.safetensors"))] == [
        p.stat().st_size for p in sorted(Path(tiny_model_dir).glob("*.safetensors"))]
    assert base_sha(other) != base_sha(tiny_model_dir)
    assert base_sha(copy) == base_sha(tiny_model_dir)


def test_a_file_is_hashed_once_and_remembered_across_processes_by_path_size_and_mtime(tmp_path, monkeypatch):
    import os

    from adapterbench import digest

    monkeypatch.setenv("ADAPTERBENCH_HOME", str(tmp_path / "home"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * (2 << 20))
    first = digest.file_sha256(weights)
    assert first == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert str(weights.resolve()) in json.loads((tmp_path / "home" / digest.CACHE_FILE).read_text())

    digest.clear_memo()  # a new process: only the cache file remembers
    real_sha256 = digest.hashlib.sha256
    monkeypatch.setattr(digest.hashlib, "sha256", lambda: pytest.fail("hashed again"))
    assert digest.file_sha256(weights) == first
    monkeypatch.setattr(digest.hashlib, "sha256", real_sha256)

    weights.write_bytes(b"b" * (2 << 20))  # same size, new content and mtime
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert digest.file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest() != first


def trained_on(adapter: Path, base: Path) -> Path:
    """Give `adapter` the training manifest a run on `base` would write beside it."""
    (adapter / "manifest.json").write_text(json.dumps({"base": {"ref": str(base), "sha256": base_sha(base)},
                                                       "config": {"quant": "none"}}))
    return adapter


def test_an_adapter_trained_on_another_base_is_refused_unless_allowed_and_then_recorded(
        tiny_model_dir, suite_file, lora, tmp_path, capsys):
    other = build_tiny_model(tmp_path / "other", seed=1, init_std=0.3)
    adapter = trained_on(shutil.copytree(lora, tmp_path / "foreign"), other)
    store = tmp_path / "s.sqlite"
    eval_args = ["eval", suite_file, "--base", tiny_model_dir, "--adapter", adapter, "--limit", 1, "--store", store]
    code, _, err = run(capsys, *eval_args)
    assert code == 2 and err.count("\n") == 1
    assert "was trained on another base" in err and "--allow-base-mismatch" in err
    assert not store.exists()

    code, _, _ = run(capsys, *eval_args, "--allow-base-mismatch")
    assert code == 0
    with database.connect(store) as conn:
        saved = database.load_evaluation(conn, "latest", with_samples=False)
    assert saved["config"]["base_mismatch"] == ["foreign"]

    trained_on(adapter, Path(tiny_model_dir))  # its own base: scored without the flag
    assert run(capsys, *eval_args)[0] == 0


def test_generate_chat_and_gate_refuse_a_foreign_adapter_too(tiny_model_dir, suite_file, lora, tmp_path, capsys,
                                                             no_model_loading):
    other = build_tiny_model(tmp_path / "other", seed=1, init_std=0.3)
    adapter = trained_on(shutil.copytree(lora, tmp_path / "foreign"), other)
    (tmp_path / "p.txt").write_text("What is LoRA?\n")
    (tmp_path / "gate.yaml").write_text(f"suite: {suite_file}\nbase: {tiny_model_dir}\n")
    for args in (["generate", "--prompts", tmp_path / "p.txt", "--base", tiny_model_dir, "--adapter", adapter],
                 ["chat", "--base", tiny_model_dir, "--adapter", adapter],
                 ["gate", "--baseline", lora, "--candidate", adapter, "--rules", tmp_path / "gate.yaml",
                  "--store", tmp_path / "s.sqlite"]):
        code, _, err = run(capsys, *args)
        assert code == 2 and "was trained on another base" in err and err.count("\n") == 1, args


def test_one_adapter_has_one_identity_whatever_its_config_order_or_layout(lora, tmp_path):
    config = json.loads((lora / "adapter_config.json").read_text())
    shuffled = shutil.copytree(lora, tmp_path / "shuffled")
    reordered = {key: config[key] for key in reversed(list(config))}
    reordered["target_modules"] = list(reversed(config["target_modules"]))
    reordered["base_model_name_or_path"] = "/elsewhere/on/another/machine"
    (shuffled / "adapter_config.json").write_text(json.dumps(reordered))
    assert adapter_identity(shuffled)["sha256"] == adapter_identity(lora)["sha256"]

    reordered["lora_alpha"] += 1  # what the adapter computes: another identity
    (shuffled / "adapter_config.json").write_text(json.dumps(reordered))
    assert adapter_identity(shuffled)["sha256"] != adapter_identity(lora)["sha256"]


def test_canonical_config_sorts_order_free_lists_only():
    text = canonical_config({"r": 4, "target_modules": ["v", "q"], "layers_to_transform": [3, 1],
                             "rank_pattern": {"b": 2, "a": 1}, "other": ["y", "x"]})
    assert json.loads(text) == {"layers_to_transform": [1, 3], "other": ["y", "x"], "r": 4,
                                "rank_pattern": {"a": 1, "b": 2}, "target_modules": ["q", "v"]}
    assert list(json.loads(text)) == sorted(json.loads(text))


def _truncate(adapter: Path) -> None:
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _poison(value: float):
    def poison(adapter: Path) -> None:
        weights = adapter / "adapter_model.safetensors"
        tensors = load_file(weights)
        name = next(n for n in tensors if "lora_B" in n)
        tensors[name][0, 0] = value
        save_file(tensors, weights)

    return poison


def _set_config(**changes):
    def change(adapter: Path) -> None:
        config = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps({**config, **changes}))

    return change


def _pickle_only(adapter: Path) -> None:
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(weights), adapter / "adapter_model.bin")
    weights.unlink()


BROKEN = {
    "truncated safetensors": (_truncate, "adapter_model.safetensors: not a readable safetensors file"),
    "garbage safetensors": (lambda a: (a / "adapter_model.safetensors").write_bytes(b"\x07" * 64),
                            "adapter_model.safetensors: not a readable safetensors file"),
    "empty safetensors": (lambda a: (a / "adapter_model.safetensors").write_bytes(b""),
                          "adapter_model.safetensors: not a readable safetensors file"),
    "config not JSON": (lambda a: (a / "adapter_config.json").write_text('{\n  "r": 4,\n  peft_type: LORA\n}'),
                        "adapter_config.json:3: not valid JSON"),
    "config a list": (lambda a: (a / "adapter_config.json").write_text("[4]"),
                      "adapter_config.json: expected a JSON object, found list"),
    "config not UTF-8": (lambda a: (a / "adapter_config.json").write_bytes(b'{"r": "\xff"}'),
                         "adapter_config.json: not UTF-8 text"),
    "manifest beside it corrupt": (lambda a: (a / "manifest.json").write_text('{"base": '),
                                   "manifest.json:1: not valid JSON"),
    "manifest of its run corrupt": (lambda a: (a.parent / "manifest.json").write_text("nul"),
                                    "manifest.json:1: not valid JSON"),
    "manifest base not an object": (lambda a: (a / "manifest.json").write_text('{"base": "x"}'),
                                    "manifest.json: field 'base': expected an object"),
    "r disagrees with the weights": (_set_config(r=8), "adapter_config.json: field 'r': says r=8 but weight"),
    "r not a number": (_set_config(r="four"), "adapter_config.json: field 'r': expected a positive integer"),
    "pickle only": (_pickle_only, "adapter_model.bin is a pickle"),
    "NaN weight": (_poison(float("nan")), "holds 1 NaN/inf values"),
    "inf weight": (_poison(float("inf")), "holds 1 NaN/inf values"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_adapter_dir_is_one_line_before_any_model_loads(case, tiny_model_dir, suite_file, lora, tmp_path,
                                                                 capsys, no_model_loading):
    breaks, expected = BROKEN[case]
    adapter = shutil.copytree(lora, tmp_path / "run" / "adapter")
    breaks(adapter)
    store = tmp_path / "s.sqlite"
    code, out, err = run(capsys, "eval", suite_file, "--base", tiny_model_dir, "--adapter", adapter,
                         "--store", store)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert expected in err
    assert not store.exists()
