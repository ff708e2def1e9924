"""The trainer's LoRA layer forward: PEFT's vanilla LoRA, base(x) + scaling * B(A(dropout(x))), with the base
output's defensive copy dropped and B, the scaling and the sum in one addmm (bench/RESULTS.md: a QLoRA epoch 1-2 %
faster on the 2-core machine, paired). Any call it does not reproduce exactly runs PEFT's own forward."""

from __future__ import annotations

import types

import torch


def use_lean_lora_forward(model) -> int:
    """Give every LoRA layer over a plain or 4-bit linear base lora_forward; returns how many."""
    from peft.tuners.lora import Linear
    from peft.tuners.lora.bnb import Linear4bit

    lean = [module for module in model.modules() if type(module) in (Linear, Linear4bit)]
    for module in lean:
        module.forward = types.MethodType(lora_forward, module)
    return len(lean)


def lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """PEFT's forward of this layer, the same numbers in fp32 (one rounding fewer in bf16) where lean_adapter allows."""
    adapter = lean_adapter(self, x, args, kwargs)
    if adapter is None:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    hidden = self.lora_A[adapter](self.lora_dropout[adapter](x))
    rows = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                       self.lora_B[adapter].weight.t(), alpha=self.scaling[adapter])
    return rows.view(result.shape)


def lean_adapter(layer, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The one adapter a gradient-tracking forward of `layer` applies, if it is vanilla LoRA (no DoRA or other
    variant, no bias on B) and the base's output and the LoRA product come out in the input's dtype (under autocast,
    an input already in its dtype; without, input, LoRA weights and an unquantized base's weight of one dtype), so
    PEFT's sum casts nothing; else None. Without gradients (the trainer's evaluations) PEFT's forward runs, so they
    score what `adapterbench eval` does."""
    if args or kwargs or not torch.is_grad_enabled() or layer.disable_adapters or layer.merged:
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or active[0] in layer.lora_variant:
        return None
    adapter = active[0]
    lora_a, lora_b = layer.lora_A[adapter], layer.lora_B[adapter]
    if (lora_b.bias is not None or lora_a.bias is not None or not isinstance(lora_a, torch.nn.Linear)
            or type(lora_b) is not torch.nn.Linear):
        return None
    if torch.is_autocast_enabled(x.device.type):
        return adapter if x.dtype == torch.get_autocast_dtype(x.device.type) else None
    base = layer.get_base_layer().weight
    quantized = getattr(base, "quant_state", None) is not None  # bitsandbytes casts its output to the input's dtype
    same_dtype = x.dtype == lora_a.weight.dtype == lora_b.weight.dtype and (quantized or base.dtype == x.dtype)
    return adapter if same_dtype else None
