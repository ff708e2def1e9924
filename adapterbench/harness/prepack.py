"""A bf16 model's linear layers with their weights packed once for oneDNN while it scores on a CPU: the kernel
F.linear runs there, bit for bit (tests/test_prepack.py, and checked on each weight shape before use), without
re-packing every weight at every call, which costs a decode step of 30 prompts about a third of its matmul time."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
import torch.nn.functional as F

MEMORY_SHARE = 0.25  # the packed copies may take this share of the memory still available, else nothing is packed
PROBE_ROWS = (1, 37, 300)  # a decode step's, a short prompt's and a packed row's worth of rows
_agreement: dict[tuple, bool] = {}  # (out, in, bias) -> the packed kernel gave F.linear's bits on the probes


@contextmanager
def packed_linears(model):
    """For the block, each plain bf16 `nn.Linear` of `model` on a CPU whose bf16 matmuls run in oneDNN computes with
    a packed copy of its weight (the weights must not change meanwhile); anything else runs as it is: other layers,
    a layer whose forward someone already replaced (accelerate's hooks), a weight shape on which the packed kernel
    does not give F.linear's bits, and all layers where packing fails or the copies would not fit in memory."""
    layers = [module for module in model.modules() if type(module) is torch.nn.Linear
              and module.weight.dtype == torch.bfloat16 and module.weight.device.type == "cpu"
              and "forward" not in vars(module)]
    if layers and onednn_bf16() and _copies_fit(layers):
        packed = _pack([module for module in layers if _packing_agrees(module)])
    else:
        packed = {}
    try:
        for module, weight in packed.items():
            module.forward = functools.partial(_packed_forward, module.weight, weight, module.bias)
        yield
    finally:
        for module in packed:
            vars(module).pop("forward", None)


def onednn_bf16() -> bool:
    """Whether PyTorch sends this CPU's bf16 matmuls to oneDNN (AVX512-BF16 or AMX): only then can the packed
    kernel be the one F.linear runs."""
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_linear_pointwise")
            and hasattr(mkldnn, "_reorder_linear_weight") and bool(mkldnn._is_mkldnn_bf16_supported()))


def _copies_fit(layers) -> bool:
    import psutil

    size = sum(module.weight.numel() * module.weight.element_size() for module in layers)
    return size <= MEMORY_SHARE * psutil.virtual_memory().available


def _pack(layers) -> dict:
    try:
        return {module: torch.ops.mkldnn._reorder_linear_weight(module.weight.detach()) for module in layers}
    except RuntimeError:  # a oneDNN build that cannot pack this weight: the plain path
        return {}


def _packing_agrees(module) -> bool:
    """The packed kernel gives F.linear's bits on random inputs of PROBE_ROWS rows, for this weight shape (checked
    once per process and shape, on this layer's own weight)."""
    key = (*module.weight.shape, module.bias is not None)
    if key not in _agreement:
        generator = torch.Generator().manual_seed(0)
        weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()
        packed = _pack([module]).get(module)
        _agreement[key] = packed is not None and all(
            torch.equal(F.linear(x, weight, bias), torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))
            for x in (torch.randn(rows, weight.shape[1], generator=generator).to(torch.bfloat16)
                      for rows in PROBE_ROWS))
    return _agreement[key]


def _packed_forward(weight, packed, bias, x):
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if x.dtype != torch.bfloat16 or needs_grad:
        return F.linear(x, weight, bias)  # the packed op has no autograd; other dtypes are not its kernel's
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
