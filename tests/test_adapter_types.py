"""Every PEFT adapter type scores exactly as lm-eval's HFLM `peft=` scores it (PEFT's own forward; fp32, every task
type, identical greedy text), alone and mixed in one evaluation; an adapter that changes nothing is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterbench.harness.prepack import onednn_bf16
from test_architectures import LIMIT, assert_equal_to_reference, reference_run, suite_file  # noqa: F401

# LoRA on every projection with biases in the base (so bias="all" has something to move) and tied embeddings
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTER_CONFIGS = {
    "lora": ("LoraConfig", {"target_modules": ALL_LINEAR}),
    "dora": ("LoraConfig", {"target_modules": ALL_LINEAR, "use_dora": True}),
    "rslora": ("LoraConfig", {"target_modules": ALL_LINEAR, "use_rslora": True}),
    "lora_bias_all": ("LoraConfig", {"target_modules": ["q_proj", "v_proj"], "bias": "all"}),
    "lora_bias": ("LoraConfig", {"target_modules": ["q_proj", "v_proj"], "lora_bias": True}),
    "lora_layers": ("LoraConfig", {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]}),
    "lora_patterns": ("LoraConfig", {"target_modules": ALL_LINEAR, "rank_pattern": {"q_proj": 2},
                                     "alpha_pattern": {"v_proj": 3}}),
    "lora_embedding": ("LoraConfig", {"target_modules": ["embed_tokens", "q_proj"]}),
    "lora_modules_to_save": ("LoraConfig", {"target_modules": ["q_proj"], "modules_to_save": ["norm"]}),
    "lora_lm_head": ("LoraConfig", {"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}),
    "lora_trainable_tokens": ("LoraConfig", {"target_modules": ["q_proj"], "trainable_token_indices": [1, 2, 5]}),
    "adalora": ("AdaLoraConfig", {"target_modules": ["q_proj", "v_proj"], "total_step": 10}),
    "ia3": ("IA3Config", {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}),
    "loha": ("LoHaConfig", {"target_modules": ALL_LINEAR}),
    "lokr": ("LoKrConfig", {"target_modules": ALL_LINEAR}),
    "vera": ("VeraConfig", {"target_modules": ["q_proj", "v_proj"]}),
    "oft": ("OFTConfig", {"target_modules": ["q_proj", "v_proj"], "r": 0, "oft_block_size": 8}),
    "boft": ("BOFTConfig", {"target_modules": ["q_proj", "v_proj"], "boft_block_size": 8}),
    "hra": ("HRAConfig", {"target_modules": ["q_proj", "v_proj"]}),
    "fourierft": ("FourierFTConfig", {"target_modules": ["q_proj", "v_proj"], "n_frequency": 64}),
    "ln_tuning": ("LNTuningConfig", {"target_modules": ["input_layernorm", "norm"]}),
    "prompt_tuning": ("PromptTuningConfig", {"num_virtual_tokens": 4}),
    "prefix_tuning": ("PrefixTuningConfig", {"num_virtual_tokens": 4}),
    "p_tuning": ("PromptEncoderConfig", {"num_virtual_tokens": 4, "encoder_hidden_size": 32}),
}
LM_EVAL_PEFT_BREAKS = {"lora_trainable_tokens", "lora_lm_head"}  # lm-eval's peft= crashes on these (tie_weights on the wrap)


def build_base(out: Path) -> Path:
    """conftest's tiny Llama with biases on attention and MLP projections (and tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=0.3,
                         attention_bias=True, mlp_bias=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def random_adapter(base_dir: Path, out: Path, kind: str, seed: int = 0, scale: float = 0.2) -> Path:
    """A saved PEFT adapter of `kind` whose every trainable tensor is random, so it really changes the model."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    class_name, options = ADAPTER_CONFIGS[kind]
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = getattr(peft, class_name)(task_type="CAUSAL_LM", **options)
    peft_model = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(peft_model.named_parameters()):
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return build_base(tmp_path_factory.mktemp("biased-llama"))


@pytest.mark.parametrize("kind", sorted(ADAPTER_CONFIGS))
def test_adapter_type_scores_equal_lm_eval_hflm_peft(kind, base_dir, suite_file, tmp_path):
    from adapterbench.harness.evaluate import evaluate

    adapter = random_adapter(base_dir, tmp_path / kind, kind)
    ours = evaluate(suite_file, base=str(base_dir), adapters={kind: str(adapter)}, limit=LIMIT, dtype="fp32",
                    save=False)
    reference = reference_run(base_dir, suite_file, tmp_path / "tasks", peft=adapter,
                              prebuilt=kind in LM_EVAL_PEFT_BREAKS)
    assert_equal_to_reference(ours, kind, reference)


def test_adapter_peft_cannot_apply_is_refused_in_one_line(base_dir, suite_file, tmp_path):
    """LoRA on an RMSNorm: PEFT refuses the module type; eval says so in one line before scoring."""
    import json

    from adapterbench.errors import UserError
    from adapterbench.harness.evaluate import evaluate

    adapter = random_adapter(base_dir, tmp_path / "norm", "lora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["input_layernorm"]}))
    with pytest.raises(UserError, match="PEFT cannot apply this LORA adapter to this base: ") as refused:
        evaluate(suite_file, base=str(base_dir), adapters={"norm": str(adapter)}, limit=1, save=False)
    assert "\n" not in str(refused.value)


def test_adapters_of_every_kind_in_one_evaluation_score_as_they_do_alone(base_dir, suite_file, tmp_path):
    """One base, adapters of five PEFT types attached in turn: each scores as it does alone, and the base scored
    after them all (its bias and LM head touched by some) scores as it does with no adapter loaded."""
    from adapterbench.harness.evaluate import evaluate, results_table

    kinds = ["lora_bias_all", "prompt_tuning", "ia3", "lora_lm_head", "dora"]
    adapters = {kind: str(random_adapter(base_dir, tmp_path / kind, kind, seed=3)) for kind in kinds}
    tasks = ["mc", "ppl", "qa"]
    mixed = results_table(evaluate(suite_file, base=str(base_dir), adapters={**adapters, "again": adapters["ia3"]},
                                   limit=LIMIT, dtype="fp32", tasks=tasks, save=False))
    base_alone = results_table(evaluate(suite_file, base=str(base_dir), limit=LIMIT, dtype="fp32", tasks=tasks,
                                        save=False))["base"]
    assert mixed["base"] == base_alone
    for kind, path in adapters.items():
        alone = results_table(evaluate(suite_file, base=str(base_dir), adapters={kind: path}, limit=LIMIT,
                                       dtype="fp32", tasks=tasks, save=False))
        assert mixed[kind] == alone[kind], kind
        assert mixed[kind]["ppl"] != mixed["base"]["ppl"], kind
    assert mixed["again"] == mixed["ia3"]


@pytest.mark.skipif(not onednn_bf16(), reason="no oneDNN bf16 matmuls on this CPU: weights are never packed here")
def test_packed_weights_change_no_bf16_score_of_an_unmerged_adapter(base_dir, suite_file, tmp_path,
                                                                     with_and_without_packing):
    """Adapters PEFT runs unmerged (DoRA; a trained copy of the LM head; IA3's scaled layers) over a base with
    biases, in bf16: every score and greedy answer is the same with the base's layers packed for oneDNN."""
    from adapterbench.harness.evaluate import evaluate

    adapters = {kind: str(random_adapter(base_dir, tmp_path / kind, kind, seed=5))
                for kind in ("dora", "lora_lm_head", "ia3")}

    def run():
        result = evaluate(suite_file, base=str(base_dir), adapters=adapters, limit=LIMIT, dtype="bf16", save=False)
        return ([(s["label"], s["task"], s["metric"], s["value"]) for s in result["scores"]],
                [(s["label"], s["task"], s["doc_id"], s["prediction"]) for s in result["samples"]])

    packed, plain = with_and_without_packing(run)
    assert packed == plain


def test_an_adapter_that_changes_nothing_is_refused_unless_allowed(base_dir, suite_file, tmp_path):
    """Zero B matrices (PEFT's own init): its outputs equal the base's bit for bit, so eval refuses it before
    scoring; --allow-noop-adapter scores it, and then its scores are the base's."""
    import peft
    from transformers import AutoModelForCausalLM

    from adapterbench.errors import UserError
    from adapterbench.harness.evaluate import evaluate, results_table

    zero = tmp_path / "zero"
    peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                        peft.LoraConfig(target_modules=["q_proj", "v_proj"])).save_pretrained(zero)
    with pytest.raises(UserError, match="this adapter changes nothing.*--allow-noop-adapter"):
        evaluate(suite_file, base=str(base_dir), adapters={"zero": str(zero)}, limit=1, save=False)
    scored = results_table(evaluate(suite_file, base=str(base_dir), adapters={"zero": str(zero)}, limit=2,
                                    tasks=["mc", "ppl"], dtype="fp32", save=False, allow_noop_adapter=True))
    assert scored["zero"] == scored["base"]


def test_adapter_config_from_a_newer_peft_is_refused_not_silently_trimmed(base_dir, suite_file, tmp_path):
    """PEFT drops config fields it does not know with a warning and scores without them: refused instead when the
    unknown field asks for something; an unknown field left at its default is harmless and accepted."""
    import json

    from adapterbench.errors import UserError
    from adapterbench.harness.evaluate import evaluate

    adapter = random_adapter(base_dir, tmp_path / "future", "lora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_hyper_future": False}))
    evaluate(suite_file, base=str(base_dir), adapters={"future": str(adapter)}, limit=1, tasks=["mc"], save=False)
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_hyper_future": True}))
    with pytest.raises(UserError, match=r"saved by a newer PEFT: peft \S+ does not know use_hyper_future"):
        evaluate(suite_file, base=str(base_dir), adapters={"future": str(adapter)}, limit=1, save=False)


def test_eval_cli_refuses_a_noop_adapter_in_one_line_and_allow_flag_scores_it(base_dir, suite_file, tmp_path,
                                                                               capsys):
    import peft
    from transformers import AutoModelForCausalLM

    from adapterbench.cli import main

    zero = tmp_path / "zero"
    peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                        peft.LoraConfig(target_modules=["q_proj"])).save_pretrained(zero)
    capsys.readouterr()
    args = ["eval", str(suite_file), "--base", str(base_dir), "--adapter", str(zero), "--limit", "1", "--tasks", "mc",
            "--dtype", "fp32", "--store", str(tmp_path / "s.sqlite")]
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("error") or "changes nothing" in line]
    assert len(said) == 1 and "changes nothing" in said[0] and "Traceback" not in err, err[-500:]
    assert not (tmp_path / "s.sqlite").exists()
    with pytest.raises(SystemExit) as allowed:
        main(args + ["--allow-noop-adapter", "--json"])
    assert allowed.value.code == 0
