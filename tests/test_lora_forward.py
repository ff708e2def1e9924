"""The trainer's lean LoRA forward: PEFT's output and gradients (fp32 to rounding, bf16 as close to exact as PEFT's),
on plain and 4-bit bases and every architecture of the matrix; anything else runs PEFT's own forward."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from adapterbench.training import lora_forward
from adapterbench.training.dropout import use_fast_lora_dropout
from adapterbench.training.lora_forward import lean_adapter, use_lean_lora_forward
from tiny_models import ARCHITECTURES, build_arch_model


def peft_model(directory, quant: str = "none", dropout: float = 0.0, lean: bool = False, **lora):
    from adapterbench.adapters.models import load_model

    torch.manual_seed(0)
    model, _ = load_model(str(directory), dtype="fp32" if quant == "none" else "bf16", quant=quant,
                          device="cpu")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                             init_lora_weights=False, task_type="CAUSAL_LM", **lora))
    use_fast_lora_dropout(model)
    if lean:
        assert use_lean_lora_forward(model) > 0
    return model.train()


def loss_and_grads(model, autocast: bool = False, seed: int = 3):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (3, 24), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    torch.manual_seed(seed)  # the same dropout draws on both sides
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return loss.detach(), grads


def assert_close_grads(ours: dict, reference: dict, rel: float) -> None:
    for name, grad in reference.items():
        assert (ours[name] - grad).abs().max() <= rel * grad.abs().max(), name


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_a_training_step_on_every_architecture_equals_pefts_forward(architecture, dropout, tmp_path):
    if dropout and architecture in ("mixtral", "qwen3_moe"):
        pytest.skip("PEFT's LoRA on expert parameters takes no dropout")
    directory = build_arch_model(architecture, tmp_path / architecture)
    reference = loss_and_grads(peft_model(directory, dropout=dropout))
    ours = loss_and_grads(peft_model(directory, dropout=dropout, lean=True))
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-6, atol=1e-6)
    assert_close_grads(ours[1], reference[1], 1e-5)


def test_on_a_4bit_base_under_bf16_autocast_it_is_as_close_to_fp32_as_pefts(tmp_path, monkeypatch):
    """QLoRA as the trainer runs it, on weights of a trained model's scale. The exact side: an fp32 model holding the
    4-bit model's dequantized weights, with the same LoRA weights and dropout draws."""
    import bitsandbytes.functional as bnb_functional

    directory = build_arch_model("llama", tmp_path / "llama", init_std=0.02)
    quantized = dict(peft_model(directory, quant="nf4", dropout=0.1).named_parameters())
    exact_model = peft_model(directory, dropout=0.1)
    with torch.no_grad():
        for name, param in exact_model.named_parameters():
            source = quantized[name]
            state = getattr(source, "quant_state", None)
            param.copy_(bnb_functional.dequantize_4bit(source.data, state) if state is not None else source)
    exact = loss_and_grads(exact_model)
    peft = loss_and_grads(peft_model(directory, quant="nf4", dropout=0.1), autocast=True)
    calls = []
    monkeypatch.setattr(lora_forward, "lean_adapter", lambda *args: calls.append(lean_adapter(*args)) or calls[-1])
    ours = loss_and_grads(peft_model(directory, quant="nf4", dropout=0.1, lean=True), autocast=True)
    assert calls and set(calls) == {"default"} and ours[0].dtype == peft[0].dtype  # every layer took the lean path
    assert abs(ours[0] - exact[0]) <= 2 * abs(peft[0] - exact[0]) + 1e-4 * abs(exact[0])

    def error(grads):  # over all LoRA gradients: one tensor's bf16 noise can go either way
        return sum(float((grads[name] - grad).norm()) ** 2 for name, grad in exact[1].items()) ** 0.5

    assert error(ours[1]) <= 1.25 * error(peft[1])


@pytest.mark.parametrize("case", ["no_grad", "merged", "disabled", "dora", "lora_bias", "two_adapters",
                                  "mixed_dtypes", "autocast_other_dtype", "kwargs"])
def test_calls_it_cannot_reproduce_run_pefts_forward(case, tiny_model_dir):
    lora = {"use_dora": True} if case == "dora" else {"lora_bias": True} if case == "lora_bias" else {}
    model = peft_model(tiny_model_dir, lean=True, **lora)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, layer.in_features)
    args, kwargs = (), {}
    if case == "merged":
        layer.merge()
    elif case == "disabled":
        model.base_model.disable_adapter_layers()
    elif case == "two_adapters":
        model.add_adapter("other", LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
        model.base_model.set_adapter(["default", "other"])
    elif case == "mixed_dtypes":
        x = x.bfloat16()
    elif case == "kwargs":
        kwargs = {"adapter_names": ["default", "default"]}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast_other_dtype")  # x stays fp32
    with torch.set_grad_enabled(case != "no_grad"), autocast:
        assert lean_adapter(layer, x, args, kwargs) is None
        if case not in ("mixed_dtypes", "kwargs"):
            assert torch.equal(layer(x), type(layer).forward(layer, x))
    assert lean_adapter(peft_model(tiny_model_dir, lean=True).base_model.model.model.layers[0].self_attn.q_proj,
                        x.float(), (), {}) == "default"
