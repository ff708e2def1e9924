"""The trainer's attention: on short rows it gives SDPA's output and SDPA's gradients (every mask transformers makes
for training, grouped key heads, every architecture the trainer takes), and every call it cannot reproduce runs
SDPA itself."""

from __future__ import annotations

import pytest
import torch

from adapterbench.training import attention
from adapterbench.training.attention import MAX_ROW_TOKENS, training_attention, use_training_attention
from tiny_models import ARCHITECTURES, build_arch_model

HEADS, DIM, LENGTH = 6, 8, 20
NOT_SDPA = {"gemma2": "eager (soft-capped scores)", "bloom": "eager (ALiBi)", "falcon": "its own attention code"}


class Attention(torch.nn.Module):
    is_causal = True

    def __init__(self, kv_heads: int):
        super().__init__()
        self.num_key_value_groups = HEADS // kv_heads


@pytest.fixture
def fast_calls(monkeypatch) -> list:
    """Each call of the hand-written attention, recorded; fp32 calls take it too, to compare it with SDPA exactly
    (the trainer runs it in bf16 only)."""
    monkeypatch.setattr(attention, "DTYPES", (torch.bfloat16, torch.float32))
    calls, apply = [], attention._ShortCausalAttention.apply
    monkeypatch.setattr(attention._ShortCausalAttention, "apply", lambda *a: calls.append(a) or apply(*a))
    return calls


def inputs(kv_heads: int, dtype=torch.float32, length: int = LENGTH, batch: int = 3):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch, length, HEADS, DIM, generator=generator).transpose(1, 2)  # as a model's view
    key, value = (torch.randn(batch, kv_heads, length, DIM, generator=generator) for _ in range(2))
    return [t.to(dtype).requires_grad_() for t in (query, key, value)]


def masks(kind: str, length: int = LENGTH):
    """None (plain causal), or the boolean masks transformers' sdpa_mask makes: right padding, a sliding window."""
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    if kind == "causal":
        return None
    if kind == "padded":
        real = torch.tensor([length, length - 6, 3])
        return causal & (torch.arange(length) < real[:, None])[:, None, None, :]
    window = torch.arange(length)[:, None] - torch.arange(length)[None, :] < 5
    return (causal & window)[None, None]


def run(fn, kv_heads, mask, dtype=torch.float32, **kwargs):
    query, key, value = inputs(kv_heads, dtype)
    out, _ = fn(Attention(kv_heads), query, key, value, mask, dropout=0.0, scaling=0.3, **kwargs)
    (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return [out.detach().float()] + [t.grad.float() for t in (query, key, value)]


def sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


@pytest.mark.parametrize("kv_heads", [2, HEADS])
@pytest.mark.parametrize("kind", ["causal", "padded", "window"])
def test_short_rows_give_sdpas_output_and_gradients(kind, kv_heads, fast_calls):
    expected = run(sdpa, kv_heads, masks(kind))
    ours = run(training_attention, kv_heads, masks(kind))
    assert len(fast_calls) == 1
    for mine, theirs in zip(ours, expected):  # output, then the query's, key's and value's gradients
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_in_bf16_it_is_as_close_to_the_exact_attention_as_sdpa_is(fast_calls):
    exact = run(sdpa, 2, masks("padded"), torch.float64)
    sdpa_error = [(a - b).abs().max() for a, b in zip(run(sdpa, 2, masks("padded"), torch.bfloat16), exact)]
    our_error = [(a - b).abs().max() for a, b in zip(run(training_attention, 2, masks("padded"), torch.bfloat16), exact)]
    assert len(fast_calls) == 1
    for mine, theirs, reference in zip(our_error, sdpa_error, exact):
        assert mine <= 3 * theirs + 1e-3 * reference.abs().max(), (mine, theirs)


@pytest.mark.parametrize("call", ["fp32", "no_grad", "long_rows", "float_mask", "dropout", "softcap",
                                  "query_without_keys", "extra_tensor"])
def test_calls_it_cannot_reproduce_run_sdpa(call, fast_calls, monkeypatch):
    if call == "fp32":
        monkeypatch.setattr(attention, "DTYPES", (torch.bfloat16,))  # the trainer's
    length = MAX_ROW_TOKENS + 1 if call == "long_rows" else LENGTH
    query, key, value = inputs(2, torch.float32 if call == "fp32" else torch.bfloat16, length=length, batch=1)
    mask, kwargs = masks("padded", length)[:1], {}
    if call == "float_mask":
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    elif call == "query_without_keys":
        mask = mask.clone()
        mask[..., 0, :] = False
    elif call in ("dropout", "softcap"):
        kwargs = {call: 0.5}
    elif call == "extra_tensor":
        kwargs = {"s_aux": torch.zeros(HEADS)}
    sdpa_calls = []

    def recorded_sdpa(*args, **kw):
        sdpa_calls.append(args)
        return "sdpa's", None

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", recorded_sdpa)
        with torch.set_grad_enabled(call != "no_grad"):
            out, _ = training_attention(Attention(2), query, key, value, mask, scaling=0.3,
                                        dropout=kwargs.pop("dropout", 0.0), **kwargs)
    assert out == "sdpa's" and len(sdpa_calls) == 1 and not fast_calls


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_training_step_on_every_architecture_equals_sdpas(architecture, tmp_path, fast_calls):
    """The loss and every LoRA gradient of a batch with padded and full rows, with the model's own attention and
    with ours; the architectures whose attention is not SDPA keep their own."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    directory = build_arch_model(architecture, tmp_path / architecture)
    generator = torch.Generator().manual_seed(1)
    results = []
    for ours in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(directory),
                               LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False,
                                          task_type="CAUSAL_LM"))
        if ours:
            assert use_training_attention(model) == (architecture not in NOT_SDPA)
        ids = torch.randint(3, model.config.vocab_size, (3, 24), generator=generator.manual_seed(1))
        padded = torch.ones_like(ids)
        padded[1, 15:] = padded[2, 6:] = 0
        loss = sum(model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
                   for mask in (padded, torch.ones_like(ids)))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (sdpa_loss, sdpa_grads), (our_loss, our_grads) = results
    layers = model.config.num_hidden_layers
    assert len(fast_calls) == (0 if architecture in NOT_SDPA else 2 * layers)
    torch.testing.assert_close(our_loss, sdpa_loss, rtol=1e-6, atol=1e-6)
    for name, grad in sdpa_grads.items():  # fp32 sums in another order, through softmaxes of large random scores
        assert (our_grads[name] - grad).abs().max() <= 5e-5 * grad.abs().max(), name


def step_gradients(model, autocast: bool) -> dict:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (3, 24), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 15:] = mask[2, 6:] = 0
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_bf16_base_under_autocast_as_the_trainer_runs_it_is_as_close_to_fp32_as_sdpa(tmp_path, monkeypatch):
    """The trainer's bf16 base (fp32 LoRA weights, bf16 autocast): its gradients with our attention are as close to
    an fp32 base's as SDPA's are."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    calls, apply = [], attention._ShortCausalAttention.apply
    monkeypatch.setattr(attention._ShortCausalAttention, "apply", lambda *a: calls.append(a) or apply(*a))
    directory = build_arch_model("llama", tmp_path / "llama")
    models = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        models.append(get_peft_model(AutoModelForCausalLM.from_pretrained(directory, dtype=dtype),
                                     LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False,
                                                task_type="CAUSAL_LM")))
    exact, with_sdpa = step_gradients(models[0], autocast=False), step_gradients(models[1], autocast=True)
    assert use_training_attention(models[1]) and not calls
    ours = step_gradients(models[1], autocast=True)
    assert len(calls) == models[1].config.num_hidden_layers
    for name, grad in exact.items():
        assert (ours[name] - grad).abs().max() <= 2 * (with_sdpa[name] - grad).abs().max() + 1e-3 * grad.abs().max()


def test_a_model_not_on_sdpa_keeps_its_attention(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(build_arch_model("llama", tmp_path / "llama"),
                                                 attn_implementation="eager")
    assert not use_training_attention(model)
    assert model.config._attn_implementation == "eager"
