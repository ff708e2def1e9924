"""Shared fixtures: a tiny Llama built from a config with a byte-level BPE tokenizer trained in-process (no hub),
the path to the team's real data when present, and the slow tests run first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOKENIZER_CORPUS = [
    "LoRA freezes the pretrained weights and learns a low-rank update.",
    "Perplexity is the exponential of the mean negative log-likelihood per token.",
    "The answer is B. Answer: C. (A) (D) true false positive negative",
    "Quantization stores each weight in four bits; NF4 uses quantiles of a normal distribution.",
    "BLEU counts overlapping n-grams; ROUGE measures recall of n-grams and longest common subsequences.",
] * 20


def pytest_collection_modifyitems(items):
    """The slow tests first (stable sort): under pytest-xdist (make test) each starts at once on a worker while the
    others share out the fast ones, instead of the longest starting last and the run waiting for it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def tiny_tokenizer():
    """A 512-token byte-level BPE trained in-process, with a ChatML-style chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TOKENIZER_CORPUS, vocab_size=512, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, init_std: float = 0.02) -> Path:
    """A 2-layer Llama (hidden 64 by default; init_std 0.3 makes its output depend on the prompt, which tests of
    batching need) with the 512-token BPE vocabulary, saved as a normal HF model dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=init_std)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), init_std=0.3)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def with_and_without_packing(monkeypatch):
    """`both(run)` calls `run()` with the linear layers packed for oneDNN (harness/prepack.py), then with packing
    switched off, checks that packed layers computed in the first call only, and returns (packed, plain)."""
    from contextlib import nullcontext

    import adapterbench.harness.lm as lm_module
    import adapterbench.harness.prepack as prepack

    calls = []
    packed_forward = prepack._packed_forward
    monkeypatch.setattr(prepack, "_packed_forward", lambda *a: calls.append(1) or packed_forward(*a))

    def both(run):
        packed = run()
        assert calls, "no packed layer computed"
        calls.clear()
        monkeypatch.setattr(lm_module, "packed_linears", lambda model: nullcontext())
        plain = run()
        assert not calls, "a packed layer computed with packing switched off"
        return packed, plain

    return both
