"""LoRA dropout that draws its mask from 15-bit random integers, four per 64-bit draw: PyTorch's CPU Bernoulli
spends one 64-bit draw per element, which took a quarter of a QLoRA step on the 2-core machine (bench/)."""

from __future__ import annotations

import torch

LEVELS = 1 << 15  # p is applied to this resolution (0.05 -> 1638/32768 = 0.04999)


class _DropScale(torch.autograd.Function):
    """0 where dropped, x * scale elsewhere; keeps the boolean mask (1 byte per element) for backward rather than a
    scaled copy."""

    @staticmethod
    def forward(ctx, x, drop, scale: float):
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return torch.where(drop, 0, x * scale)

    @staticmethod
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        return torch.where(drop, 0, grad * ctx.scale), None, None


class FastDropout(torch.nn.Module):
    """Inverted dropout with PEFT's nn.Dropout behaviour (identity in eval mode, E[output] = input), drawn from the
    default torch generator, so seeding and saved RNG states govern it as they govern nn.Dropout."""

    def __init__(self, p: float):
        super().__init__()
        self.threshold = round(p * LEVELS)
        self.p = self.threshold / LEVELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        drop = (bits.view(torch.int16)[:n] & (LEVELS - 1)).view(x.shape) < self.threshold
        return _DropScale.apply(x, drop, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_lora_dropout(model) -> int:
    """Swap every LoRA layer's nn.Dropout for FastDropout (same p); returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = FastDropout(dropout.p)
                swapped += 1
    return swapped
