"""The trainer's LoRA dropout, fused into each LoRA-A layer: the mask comes from 15-bit random integers, four per
64-bit draw (PyTorch's CPU Bernoulli spends one 64-bit draw per element, a quarter of a QLoRA step on the 2-core
machine), and backward keeps the layer's input and the generator state, not a dropped copy and a mask (bench/)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEVELS = 1 << 15  # p is applied to this resolution (0.05 -> 1638/32768 = 0.04999)


def draw_drop_mask(shape: torch.Size, threshold: int, device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """True where an element is dropped, P = threshold / LEVELS; from the default generator unless one is given."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(generator=generator)
    return (bits.view(torch.int16)[:n] & (LEVELS - 1)).view(shape) < threshold


def default_generator(device: torch.device) -> torch.Generator | None:
    """The generator `random_()` draws from on `device` (seeded by torch.manual_seed, saved in checkpoints' RNG
    states); None where this module does not know it."""
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return None


class _DroppedLinear(torch.autograd.Function):
    """linear(dropout(x), weight) under the caller's autocast. Backward keeps x (q, k and v share theirs, gate and
    up theirs) and the state the mask was drawn from; it draws the mask again and recomputes the dropped input, the
    same operations as autograd on the unfused pair, so the gradients are the same bits."""

    @staticmethod
    def forward(ctx, x, weight, threshold: int, scale: float):
        generator = default_generator(x.device)
        ctx.state, ctx.threshold, ctx.scale, ctx.weight_dtype = generator.get_state(), threshold, scale, weight.dtype
        drop = draw_drop_mask(x.shape, threshold, x.device)
        if torch.is_autocast_enabled(x.device.type):
            weight = weight.to(torch.get_autocast_dtype(x.device.type))
        ctx.save_for_backward(x, weight)
        return F.linear(torch.where(drop, 0, x * scale), weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        generator = torch.Generator(device=x.device)
        generator.set_state(ctx.state)
        drop = draw_drop_mask(x.shape, ctx.threshold, x.device, generator)
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.where(drop, 0, grad_rows.mm(weight).view(x.shape).to(x.dtype) * ctx.scale)
        if ctx.needs_input_grad[1]:
            dropped = torch.where(drop, 0, x * ctx.scale).to(weight.dtype).reshape(-1, x.shape[-1])
            grad_weight = grad_rows.t().mm(dropped).to(ctx.weight_dtype)
        return grad_x, grad_weight, None, None


class DroppedLinear(torch.nn.Linear):
    """A LoRA-A layer (the same weight Parameter and state-dict key) with its inverted dropout inside: identity in
    eval mode, E[output] = linear(input) in training, like PEFT's nn.Dropout before nn.Linear."""

    def __init__(self, linear: torch.nn.Linear, p: float):
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = linear.weight
        self.threshold = round(p * LEVELS)
        self.p = self.threshold / LEVELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return F.linear(x, self.weight)
        return _DroppedLinear.apply(x, self.weight, self.threshold, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout p={self.p}"


def use_fast_lora_dropout(model) -> int:
    """Fuse every LoRA layer's nn.Dropout into its LoRA-A layer (DroppedLinear, same p; the dropout becomes
    nn.Identity) where the device's generator is known; returns how many were fused."""
    fused = 0
    for module in model.modules():
        dropouts, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not (isinstance(dropouts, torch.nn.ModuleDict) and isinstance(lora_a, torch.nn.ModuleDict)):
            continue
        for name, dropout in list(dropouts.items()):
            linear = lora_a[name] if name in lora_a else None
            if (isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and type(linear) is torch.nn.Linear
                    and linear.bias is None and default_generator(linear.weight.device) is not None
                    and name not in getattr(module, "lora_variant", {})):
                lora_a[name] = DroppedLinear(linear, dropout.p)
                dropouts[name] = torch.nn.Identity()
                fused += 1
    return fused
