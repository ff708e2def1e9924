"""Tiny random decoder-only models of the architectures people fine-tune, built from configs (no hub), sharing
the byte-level BPE tokenizer of conftest: the matrix the fast scoring paths are proven on."""

from __future__ import annotations

from pathlib import Path

HIDDEN, LAYERS, HEADS, POSITIONS = 64, 2, 4, 512


def _llama_like(config_class, **extra):
    def build(special: dict):
        return config_class(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                            **special, **extra)
    return build


def _configs() -> dict:
    import transformers as t

    return {
        "llama": _llama_like(t.LlamaConfig, tie_word_embeddings=True),
        "mistral": _llama_like(t.MistralConfig, sliding_window=4096),
        "mistral_window": _llama_like(t.MistralConfig, sliding_window=24),  # shorter than most prompts
        "mixtral": _llama_like(t.MixtralConfig, num_local_experts=4, num_experts_per_tok=2),
        "qwen2": _llama_like(t.Qwen2Config, tie_word_embeddings=True),
        "qwen3": _llama_like(t.Qwen3Config, head_dim=16, tie_word_embeddings=True),
        "phi3": _llama_like(t.Phi3Config),
        "gemma": _llama_like(t.GemmaConfig, head_dim=16),
        # a cap this small moves every logit, so a path that forgets it cannot pass
        "gemma2": _llama_like(t.Gemma2Config, head_dim=16, final_logit_softcapping=2.0, attn_logit_softcapping=5.0,
                              sliding_window=4096, query_pre_attn_scalar=16),
        "gemma3": _llama_like(t.Gemma3TextConfig, head_dim=16, final_logit_softcapping=2.0, sliding_window=512,
                              query_pre_attn_scalar=16),
        "qwen3_moe": _llama_like(t.Qwen3MoeConfig, head_dim=16, num_experts=4, num_experts_per_tok=2,
                                 moe_intermediate_size=HIDDEN),
        "olmo2": _llama_like(t.Olmo2Config),
        "starcoder2": _llama_like(t.Starcoder2Config, sliding_window=4096),
        "phi": _llama_like(t.PhiConfig, partial_rotary_factor=0.5),
        "cohere": _llama_like(t.CohereConfig, logit_scale=0.5),
        "granite": _llama_like(t.GraniteConfig, logits_scaling=4.0),
        "falcon": lambda special: t.FalconConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                 num_attention_heads=HEADS, multi_query=True, parallel_attn=True,
                                                 bias=False, alibi=False, max_position_embeddings=POSITIONS,
                                                 **special),
        "gpt2": lambda special: t.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
                                             **special),
        "gpt_neox": lambda special: t.GPTNeoXConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                                                    num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                                    rotary_pct=0.25, max_position_embeddings=POSITIONS, **special),
        # not in the fast paths' proven list: scored through lm-eval's own path
        "bloom": lambda special: t.BloomConfig(hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS, **special),
        "opt": lambda special: t.OPTConfig(hidden_size=HIDDEN, ffn_dim=2 * HIDDEN, num_hidden_layers=LAYERS,
                                           num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN,
                                           max_position_embeddings=POSITIONS, **special),
    }


ARCHITECTURES = ("llama", "mistral", "mistral_window", "mixtral", "qwen2", "qwen3", "qwen3_moe", "phi3", "phi",
                 "gemma", "gemma2", "gemma3", "cohere", "granite", "olmo2", "starcoder2", "falcon", "gpt2", "gpt_neox",
                 "opt", "bloom")
DECLINED = {"mistral_window": "sliding window", "bloom": "not proven"}  # the rest take the fast paths


def build_arch_model(name: str, out: Path, *, seed: int = 0, init_std: float = 0.3) -> Path:
    """A 2-layer random model of architecture `name` with conftest's tokenizer, saved as an HF model dir.
    init_std 0.3 makes its output depend on the prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    special = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = _configs()[name](special)
    config.initializer_range = init_std
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


SAMPLE = Path(__file__).resolve().parents[1] / "adapterbench" / "sample" / "data"
TOPIC_LABELS = ["training", "evaluation", "quantization", "architecture"]


def every_type_suite(name: str, *, mc_gen_tokens: int, qa_tokens: int, extra: dict[str, dict] | None = None) -> str:
    """suite.yaml text with one task of every type on the sample data (mc, mc_gen, ppl, qa, topics_gen, topics_ll),
    the tests' one copy of that shape; `extra` adds fields per task name (e.g. {"qa": {"chat_template": False}})."""
    import yaml

    tasks = [{"name": "mc", "type": "multiple_choice", "data": f"{SAMPLE}/mc_test.jsonl"},
             {"name": "mc_gen", "type": "multiple_choice_generate", "data": f"{SAMPLE}/mc_test.jsonl",
              "max_new_tokens": mc_gen_tokens},
             {"name": "ppl", "type": "perplexity", "data": f"{SAMPLE}/notes_test.jsonl"},
             {"name": "qa", "type": "generation", "data": f"{SAMPLE}/qa_test.jsonl", "max_new_tokens": qa_tokens},
             {"name": "topics_gen", "type": "classification", "data": f"{SAMPLE}/topics_test.jsonl",
              "labels": list(TOPIC_LABELS), "max_new_tokens": 4},  # own lists: a shared one dumps as a YAML alias
             {"name": "topics_ll", "type": "classification", "method": "loglikelihood",
              "data": f"{SAMPLE}/topics_test.jsonl", "labels": list(TOPIC_LABELS)}]
    for task in tasks:
        task.update((extra or {}).get(task["name"], {}))
    return yaml.safe_dump({"name": name, "tasks": tasks}, sort_keys=False)
