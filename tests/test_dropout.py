"""The trainer's LoRA dropout fused into LoRA-A: nn.Dropout's contract (independent drops at rate p, scale, eval
identity, seeding) drawing only the dropped elements, and the same output and gradients, bit for bit, as autograd
on the unfused pair."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from adapterbench.training.dropout import DroppedLinear, draw_dropped, use_fast_lora_dropout


def dropped_linear(p: float, in_features: int = 11, out_features: int = 4) -> DroppedLinear:
    return DroppedLinear(torch.nn.Linear(in_features, out_features, bias=False), p).train()


def drop_mask(shape: torch.Size, p: float, sparse: bool | None = None) -> torch.Tensor:
    drops = draw_dropped(shape.numel(), p, torch.device("cpu"), sparse=sparse)
    if drops.dtype == torch.bool:
        return drops.view(shape)
    return torch.zeros(shape.numel(), dtype=torch.bool).index_fill_(0, drops, True).view(shape)


@pytest.mark.parametrize("sparse", [True, False], ids=["indexes", "mask"])
@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_each_element_is_dropped_independently_at_rate_p(p, sparse):
    torch.manual_seed(0)
    n = 400_000
    drop = drop_mask(torch.Size([n]), p, sparse)
    rate = drop.double().mean().item()
    assert rate == pytest.approx(p, abs=5 * (p * (1 - p) / n) ** 0.5)
    # independence: a drop is followed by a drop at rate p too, and runs of kept elements are geometric
    assert drop[1:][drop[:-1]].double().mean().item() == pytest.approx(p, abs=6 * (p * (1 - p) / (n * p)) ** 0.5)
    positions = torch.nonzero(drop).flatten()
    kept_runs = (positions[1:] - positions[:-1] - 1).double()
    assert kept_runs.mean().item() == pytest.approx((1 - p) / p, rel=0.03)
    assert (kept_runs >= 3).double().mean().item() == pytest.approx((1 - p) ** 3, abs=0.01)


def test_the_drops_reach_the_end_of_a_tensor_however_long():
    torch.manual_seed(0)
    for n in (1, 7, 1000, 100_003):
        positions = draw_dropped(n, 0.3, torch.device("cpu"))
        assert positions.dtype == torch.int64 and bool((positions[1:] > positions[:-1]).all())
        assert positions.numel() == 0 or 0 <= int(positions[0]) and int(positions[-1]) < n
    torch.manual_seed(1)
    tails = [bool(draw_dropped(1000, 0.3, torch.device("cpu")).ge(900).any()) for _ in range(20)]
    assert all(tails)  # the last tenth is reached every time (P(no drop in 100) = 0.7^100)


def test_drops_at_rate_p_and_keeps_the_expected_value():
    layer = dropped_linear(0.05, in_features=1, out_features=1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        out = layer(torch.ones(400_000, 1))
    assert out.mean().item() == pytest.approx(1.0, abs=0.005)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - 0.05)), rtol=1e-4)


@pytest.mark.parametrize("sparse", [True, False], ids=["indexes", "mask"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_output_and_gradients_equal_the_unfused_dropout_then_linear_bit_for_bit(autocast, sparse, monkeypatch):
    import adapterbench.training.dropout as dropout

    drawn = dropout.draw_dropped
    monkeypatch.setattr(dropout, "draw_dropped", lambda *args, **kwargs: drawn(*args, **kwargs, sparse=sparse))
    layer = dropped_linear(0.3, in_features=96, out_features=16)
    x = torch.randn(2, 33, 96, dtype=torch.bfloat16 if autocast else torch.float32, requires_grad=True)
    grad_out = torch.randn(2, 33, 16)

    def run(fused: bool):
        x.grad = layer.weight.grad = None
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if fused:
                out = layer(x)
            else:
                drop = drop_mask(x.shape, layer.p, sparse)
                out = F.linear(torch.where(drop, 0, x * (1 / (1 - layer.p))), layer.weight)
        out.backward(grad_out.to(out.dtype))
        return out.detach(), x.grad.clone(), layer.weight.grad.clone(), torch.rand(1)

    fused, reference = run(True), run(False)
    for mine, theirs in zip(fused, reference):  # the last: the generator is left where the unfused draw leaves it
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs)
    assert 0 < (fused[1] == 0).sum() < x.numel()  # some inputs dropped, not all


def test_an_input_without_gradient_still_trains_the_weight():
    layer = dropped_linear(0.2)
    layer(torch.randn(5, 11)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_eval_mode_and_p_zero_are_the_plain_linear():
    x = torch.randn(5, 11)
    for layer in (dropped_linear(0.5).eval(), dropped_linear(0.0)):
        assert torch.equal(layer(x), F.linear(x, layer.weight))


def test_same_seed_same_mask_and_odd_sizes_work():
    layer = dropped_linear(0.4, in_features=3)
    x = torch.randn(2, 5, 3)
    torch.manual_seed(7)
    first = layer(x)
    torch.manual_seed(7)
    assert torch.equal(first, layer(x)) and first.shape == (2, 5, 4)


def test_every_lora_dropout_of_a_peft_model_is_fused_and_the_saved_adapter_is_unchanged(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    tiny_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    eval_logits = model.eval()(input_ids=ids).logits
    before = {name: param.clone() for name, param in model.state_dict().items()}
    layers = tiny_model.config.num_hidden_layers
    assert use_fast_lora_dropout(model) == 2 * layers
    fused = [m for m in model.modules() if isinstance(m, DroppedLinear)]
    assert len(fused) == 2 * layers and all(m.p == 0.1 for m in fused)
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(m.weight.requires_grad for m in fused)
    assert torch.equal(model.eval()(input_ids=ids).logits, eval_logits)
    torch.manual_seed(0)
    first = model.train()(input_ids=ids).logits
    torch.manual_seed(1)
    assert not torch.equal(first, model(input_ids=ids).logits)  # PEFT's forward goes through the fused dropout
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
