"""A bf16 model's linear layers with their weights packed once for oneDNN while it scores on a CPU: the kernel
F.linear runs there, bit for bit (tests/test_prepack.py), without re-packing every weight at every call, which costs
a decode step of 30 prompts about a third of its matmul time."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
import torch.nn.functional as F

MEMORY_SHARE = 0.25  # the packed copies may take this share of the memory still available, else nothing is packed


@contextmanager
def packed_linears(model):
    """For the block, each plain bf16 `nn.Linear` of `model` on a CPU whose bf16 matmuls run in oneDNN computes with
    a packed copy of its weight (the weights must not change meanwhile); anything else runs as it is. A layer
    whose forward someone already replaced (accelerate's hooks) is left alone."""
    layers = [module for module in model.modules() if type(module) is torch.nn.Linear
              and module.weight.dtype == torch.bfloat16 and module.weight.device.type == "cpu"
              and "forward" not in vars(module)]
    if not layers or not onednn_bf16() or not _copies_fit(layers):
        yield
        return
    try:
        for module in layers:
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach())
            module.forward = functools.partial(_packed_forward, module.weight, packed, module.bias)
        yield
    finally:
        for module in layers:
            vars(module).pop("forward", None)


def onednn_bf16() -> bool:
    """Whether PyTorch sends this CPU's bf16 matmuls to oneDNN (AVX512-BF16 or AMX): only then is the packed kernel
    the one F.linear runs."""
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_linear_pointwise")
            and hasattr(mkldnn, "_reorder_linear_weight") and bool(mkldnn._is_mkldnn_bf16_supported()))


def _copies_fit(layers) -> bool:
    import psutil

    size = sum(module.weight.numel() * module.weight.element_size() for module in layers)
    return size <= MEMORY_SHARE * psutil.virtual_memory().available


def _packed_forward(weight, packed, bias, x):
    if x.dtype != torch.bfloat16 or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.linear(x, weight, bias)  # the packed op has no autograd; other dtypes are not its kernel's
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
