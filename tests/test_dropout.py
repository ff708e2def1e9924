"""The trainer's LoRA dropout: nn.Dropout's contract (rate, scale, gradient, eval identity, seeding) at a quarter of
the random draws."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from adapterbench.training.dropout import FastDropout, use_fast_lora_dropout


def test_drops_at_rate_p_and_keeps_the_expected_value():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    out = FastDropout(0.05).train()(x)
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(0.05, abs=0.002)
    assert out.mean().item() == pytest.approx(1.0, abs=0.005)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - 0.05)), rtol=1e-4)


def test_gradient_flows_only_through_kept_elements_scaled():
    torch.manual_seed(1)
    x = torch.randn(3, 7, 11, requires_grad=True)
    out = FastDropout(0.3).train()(x)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / (1 - FastDropout(0.3).p)))
    assert torch.all(x.grad[~kept] == 0)
    assert 0 < (~kept).sum() < kept.numel()


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(5, 9)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_same_seed_same_mask_and_odd_sizes_work():
    x = torch.randn(2, 5, 3)  # 30 elements: not a multiple of the 4 masks per 64-bit draw
    torch.manual_seed(7)
    first = FastDropout(0.4).train()(x)
    torch.manual_seed(7)
    second = FastDropout(0.4).train()(x)
    assert torch.equal(first, second)
    assert first.shape == x.shape


def test_every_lora_dropout_of_a_peft_model_is_swapped(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    tiny_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    layers = tiny_model.config.num_hidden_layers
    assert use_fast_lora_dropout(model) == 2 * layers
    dropouts = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert len(dropouts) == 2 * layers and all(d.p == pytest.approx(0.1, abs=1e-4) for d in dropouts)
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
