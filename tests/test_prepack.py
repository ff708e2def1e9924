"""Linear layers with weights packed once for oneDNN (harness/prepack.py): bit for bit what F.linear computes, only
where it applies, and gone after the block."""

import pytest
import torch
import torch.nn.functional as F

from adapterbench.harness.prepack import onednn_bf16, packed_linears

needs_onednn_bf16 = pytest.mark.skipif(not onednn_bf16(), reason="this CPU's bf16 matmuls do not run in oneDNN "
                                                                  "(no AVX512-BF16 or AMX): nothing is packed here")


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.SiLU(), torch.nn.Linear(96, 64, bias=False),
                               torch.nn.Linear(64, 1000, bias=False)).to(dtype)


@needs_onednn_bf16
@pytest.mark.parametrize("rows", [1, 7, 30, 600])
def test_packed_layers_compute_what_f_linear_computes_bit_for_bit(rows):
    model = _model(torch.bfloat16)
    inputs = [torch.randn(rows, 64, dtype=torch.bfloat16), torch.randn(3, rows, 64, dtype=torch.bfloat16),
              torch.randn(rows, 128, dtype=torch.bfloat16)[:, ::2]]  # 2-D, 3-D, strided
    with torch.no_grad():
        expected = [model(x) for x in inputs]
        with packed_linears(model):
            assert all("forward" in vars(layer) for layer in model if isinstance(layer, torch.nn.Linear))
            packed = [model(x) for x in inputs]
    for a, b in zip(packed, expected):
        assert torch.equal(a, b)


def test_only_plain_bf16_linear_layers_on_a_cpu_are_packed_and_all_come_back():
    bf16, fp32 = _model(torch.bfloat16), _model(torch.float32)
    with packed_linears(bf16), packed_linears(fp32):
        assert all("forward" in vars(layer) for layer in bf16 if isinstance(layer, torch.nn.Linear)) == onednn_bf16()
        assert not any("forward" in vars(layer) for layer in fp32)
    assert not any("forward" in vars(layer) for layer in bf16)


@needs_onednn_bf16
def test_a_forward_someone_replaced_is_left_alone():
    model = _model(torch.bfloat16)
    hooked = model[0]
    hooked.forward = lambda x: F.linear(x, hooked.weight, hooked.bias)  # as accelerate's hooks do
    replaced = hooked.forward
    with packed_linears(model):
        assert hooked.forward is replaced and "forward" in vars(model[2])
    assert hooked.forward is replaced and "forward" not in vars(model[2])


@needs_onednn_bf16
def test_packed_layers_still_differentiate_and_take_other_dtypes():
    model = _model(torch.bfloat16)
    x = torch.randn(5, 64, dtype=torch.bfloat16, requires_grad=True)
    expected = model(x)
    expected.sum().backward()
    grad, x.grad = x.grad.clone(), None
    with packed_linears(model):
        out = model(x)
        out.sum().backward()
        assert torch.equal(out, expected) and torch.equal(x.grad, grad)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # an fp32 input, cast by autocast
            x = torch.randn(5, 64)
            assert torch.equal(model[0](x), F.linear(x, model[0].weight, model[0].bias))


@needs_onednn_bf16
def test_nothing_is_packed_when_the_copies_would_not_fit(monkeypatch):
    import adapterbench.harness.prepack as prepack

    monkeypatch.setattr(prepack, "MEMORY_SHARE", 0.0)
    model = _model(torch.bfloat16)
    with packed_linears(model):
        assert not any("forward" in vars(layer) for layer in model)
