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
@pytest.mark.parametrize("rows", [1, 30, 600])
def test_packed_layers_of_the_default_models_shapes_compute_what_f_linear_computes(rows):
    """SmolLM2-135M's projections and LM head (hidden 576, MLP 1536, 3 key/value heads of 64, vocabulary 49,152)."""
    torch.manual_seed(0)
    shapes = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]
    model = torch.nn.ModuleList(torch.nn.Linear(i, o, bias=False) for o, i in shapes).to(torch.bfloat16)
    inputs = [torch.randn(rows, layer.in_features, dtype=torch.bfloat16) for layer in model]
    with torch.no_grad():
        expected = [layer(x) for layer, x in zip(model, inputs)]
        with packed_linears(model):
            assert all("forward" in vars(layer) for layer in model)
            assert all(torch.equal(layer(x), y) for layer, x, y in zip(model, inputs, expected))


@needs_onednn_bf16
def test_packed_layers_still_differentiate_and_take_other_dtypes():
    model = _model(torch.bfloat16)
    x = torch.randn(5, 64, dtype=torch.bfloat16, requires_grad=True)
    expected = model(x)
    expected.sum().backward()
    grad, x.grad = x.grad.clone(), None
    cast = torch.randn(5, 64)  # fp32, cast by autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected_cast = model(cast)
    with packed_linears(model):
        out = model(x)
        out.sum().backward()
        assert torch.equal(out, expected) and torch.equal(x.grad, grad)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(cast), expected_cast)


@needs_onednn_bf16
def test_a_shape_on_which_the_packed_kernel_disagrees_is_not_packed(monkeypatch):
    import adapterbench.harness.prepack as prepack

    monkeypatch.setattr(prepack, "_agreement", {})
    real = torch.ops.mkldnn._linear_pointwise
    off_by_a_bit = lambda x, *a: real(x, *a) + (x.shape[-1] == 96)  # noqa: E731 - only the 96-wide input layer
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", off_by_a_bit)
    model = _model(torch.bfloat16)
    with packed_linears(model):
        assert ["forward" in vars(layer) for layer in model if isinstance(layer, torch.nn.Linear)] == [True, False,
                                                                                                     True]


@needs_onednn_bf16
def test_a_weight_onednn_cannot_pack_leaves_every_layer_as_it_was(monkeypatch):
    import adapterbench.harness.prepack as prepack

    def refuse(weight, *args):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(prepack, "_agreement", {})
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    model = _model(torch.bfloat16)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.no_grad(), packed_linears(model):
        assert not any("forward" in vars(layer) for layer in model)
        assert model(x).shape == (3, 1000)


@needs_onednn_bf16
def test_nothing_is_packed_when_the_copies_would_not_fit(monkeypatch):
    import adapterbench.harness.prepack as prepack

    monkeypatch.setattr(prepack, "MEMORY_SHARE", 0.0)
    model = _model(torch.bfloat16)
    with packed_linears(model):
        assert not any("forward" in vars(layer) for layer in model)
