"""The trainer's LoRA dropout, fused into each LoRA-A layer: on a CPU only the dropped elements are drawn (the gaps
between them are geometric: ~p*n draws, not PyTorch's one 64-bit draw per element, a quarter of a QLoRA step on the
2-core machine), and backward keeps the layer's input and where it was dropped, not a dropped copy (bench/)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def draw_dropped(n: int, p: float, device: torch.device, generator: torch.Generator | None = None,
                 sparse: bool | None = None) -> torch.Tensor:
    """Where n elements are dropped, each independently with probability p, from the default generator unless one is
    given. `sparse` (the default on a CPU): sorted flat indexes (int64), drawn as gaps from one drop to the next,
    geometric: floor(log(U) / log(1-p)) + 1 with U uniform on (0, 1], so P(gap > k) = (1-p)^k as for n Bernoulli(p)
    draws. Else a boolean mask of n, one uniform each: an accelerator draws those fast, and counting the drops would
    make the host wait for it at every layer."""
    if not (device.type == "cpu" if sparse is None else sparse):
        return torch.rand(n, device=device, generator=generator) < p
    log_keep = math.log1p(-p)
    found, covered = [], 0
    while covered < n:  # one round almost always: the first draws ~4 standard deviations more gaps than expected
        expected = (n - covered) * p
        uniform = torch.rand(int(expected + 4 * math.sqrt(expected) + 16), dtype=torch.float64, device=device,
                             generator=generator)
        at = torch.log1p(-uniform).div_(log_keep).floor_().add_(1).cumsum_(0).add_(covered - 1)
        found.append(at)
        covered = int(at[-1]) + 1
    positions = found[0] if len(found) == 1 else torch.cat(found)
    return positions[:int(torch.searchsorted(positions, float(n)))].long()


def dropped(x: torch.Tensor, drops: torch.Tensor, scale: float) -> torch.Tensor:
    """x * scale with the dropped elements (draw_dropped's flat indexes or mask) set to 0: inverted dropout, exactly
    where(mask, 0, x * scale)."""
    out = x * scale
    if drops.dtype == torch.bool:
        return out.masked_fill_(drops.view(out.shape), 0)
    out.view(-1).index_fill_(0, drops, 0)
    return out


class _DroppedLinear(torch.autograd.Function):
    """linear(dropout(x), weight) under the caller's autocast. Backward keeps x (q, k and v share theirs, gate and
    up theirs) and where it was dropped (int32 indexes, p*4 bytes an element, or the mask); it recomputes the
    dropped input, the same operations as autograd on the unfused pair, so the gradients are the same bits."""

    @staticmethod
    def forward(ctx, x, weight, p: float, scale: float):
        drops = draw_dropped(x.numel(), p, x.device)
        ctx.scale, ctx.weight_dtype = scale, weight.dtype
        if torch.is_autocast_enabled(x.device.type):
            weight = weight.to(torch.get_autocast_dtype(x.device.type))
        compact = drops.int() if drops.dtype == torch.int64 and x.numel() < 2 ** 31 else drops
        ctx.save_for_backward(x, weight, compact)
        return F.linear(dropped(x.contiguous(), drops, scale), weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight, compact = ctx.saved_tensors
        drops = compact.long() if compact.dtype == torch.int32 else compact
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = dropped(grad_rows.mm(weight).view(x.shape).to(x.dtype), drops, ctx.scale)
        if ctx.needs_input_grad[1]:
            inputs = dropped(x.contiguous(), drops, ctx.scale).to(weight.dtype).reshape(-1, x.shape[-1])
            grad_weight = grad_rows.t().mm(inputs).to(ctx.weight_dtype)
        return grad_x, grad_weight, None, None


class DroppedLinear(torch.nn.Linear):
    """A LoRA-A layer (the same weight Parameter and state-dict key) with its inverted dropout inside: identity in
    eval mode, E[output] = linear(input) in training, like PEFT's nn.Dropout before nn.Linear."""

    def __init__(self, linear: torch.nn.Linear, p: float):
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = linear.weight
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return F.linear(x, self.weight)
        return _DroppedLinear.apply(x, self.weight, self.p, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout p={self.p}"


def use_fast_lora_dropout(model) -> int:
    """Fuse every LoRA layer's nn.Dropout into its LoRA-A layer (DroppedLinear, same p; the dropout becomes
    nn.Identity) on devices whose generator checkpoints save (a resumed run draws the same drops); returns how many
    were fused."""
    fused = 0
    for module in model.modules():
        dropouts, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not (isinstance(dropouts, torch.nn.ModuleDict) and isinstance(lora_a, torch.nn.ModuleDict)):
            continue
        for name, dropout in list(dropouts.items()):
            linear = lora_a[name] if name in lora_a else None
            if (isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and type(linear) is torch.nn.Linear
                    and linear.bias is None and linear.weight.device.type in ("cpu", "cuda")
                    and name not in getattr(module, "lora_variant", {})):
                lora_a[name] = DroppedLinear(linear, dropout.p)
                dropouts[name] = torch.nn.Identity()
                fused += 1
    return fused
