"""The trainer's attention on a CPU in bf16: causal attention over rows of up to 512 tokens as plain matmuls with a
hand-written backward, up to 3.7x faster a call there than SDPA's flash kernel; every other call goes to SDPA."""

from __future__ import annotations

import torch

from adapterbench.harness.segments import IGNORED_TENSORS

NAME = "adapterbench_training"  # registered with transformers' AttentionInterface beside "sdpa"
# Measured faster than SDPA up to rows of 512 (the default max_length); the fp32 [heads, L, L] scores grow with L^2
MAX_ROW_TOKENS = 512
# In fp32 SDPA's backward is no slower (a paired A/B on the bench workload: 1.5 % apart), so fp32 keeps SDPA
DTYPES = (torch.bfloat16,)
_last_bias: list = [None, None]  # [the mask (or the causal length) it was made for, the bias]


def use_training_attention(model) -> bool:
    """Route `model`'s attention through training_attention when it would run transformers' SDPA on a CPU; its
    masks stay SDPA's. True if it did."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if (model.device.type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa"
            or not model._can_set_attn_implementation()):  # e.g. Falcon: its attention is its own code
        return False
    AttentionInterface.register(NAME, training_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME


def training_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                       is_causal=None, **kwargs):
    """transformers' attention interface: the same output as its SDPA attention ([batch, length, heads, dim]);
    a gradient-tracking call on short rows runs _ShortCausalAttention, any other call SDPA itself."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    mask = _fitting_mask(module, query, key, value, attention_mask, dropout, is_causal, kwargs)
    if mask is False:
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                            scaling=scaling, is_causal=is_causal, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    attended = _ShortCausalAttention.apply(query, key, value, _bias(mask, query.shape[2], query.device), scale)
    return attended.transpose(1, 2).contiguous(), None


def _fitting_mask(module, query, key, value, attention_mask, dropout, is_causal, kwargs):
    """The boolean mask to apply (None: plain causal), or False where the call is not one we reproduce exactly."""
    length = query.shape[2] if query.dim() == 4 else 0
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            and query.device.type == "cpu" and query.dtype in DTYPES
            and key.dtype == value.dtype == query.dtype and key.dim() == value.dim() == 4
            and 1 < length <= MAX_ROW_TOKENS and key.shape[2] == value.shape[2] == length
            and key.shape[-1] == value.shape[-1] == query.shape[-1] and query.shape[1] % key.shape[1] == 0
            and not dropout and kwargs.get("softcap") is None and not kwargs.get("output_attentions")
            and kwargs.get("cache") is None
            and not any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k not in IGNORED_TENSORS)):
        return False
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        return None if causal else False
    if (attention_mask.dtype != torch.bool or attention_mask.dim() != 4 or attention_mask.shape[1] != 1
            or attention_mask.shape[2:] != (length, length) or attention_mask.shape[0] not in (1, query.shape[0])
            or not bool(attention_mask.any(-1).all())):  # a query with no key: SDPA's own convention decides
        return False
    return attention_mask


def _bias(mask, length: int, device) -> torch.Tensor:
    """The scores' additive mask, [batch or 1, 1, length, length]: 0 where a query may attend, -inf elsewhere; one per
    mask, which every layer of a forward shares."""
    made_for, cached = (length, str(device)) if mask is None else mask, _last_bias[0]
    if not (cached is made_for or isinstance(cached, tuple) and isinstance(made_for, tuple) and cached == made_for):
        allowed = torch.ones(1, 1, length, length, dtype=torch.bool, device=device).tril_() if mask is None else mask
        _last_bias[:] = [made_for, torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, float("-inf"))]
    return _last_bias[1]


class _ShortCausalAttention(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v for queries [batch, heads, length, dim] and keys and values [batch, kv_heads,
    length, dim], the scores and softmax in fp32 as SDPA computes them. The queries that share a key head are its
    rows, so keys are never repeated and their gradients come out summed over their queries. Like SDPA's flash
    kernel it keeps no [length, length] tensor for backward, which recomputes the probabilities: the same operations
    on the same inputs, so the same numbers."""

    @staticmethod
    def forward(ctx, query, key, value, bias, scale):
        batch, heads, length, dim = query.shape
        grouped = query.reshape(batch, key.shape[1], -1, dim)  # [batch, kv_heads, heads per kv head * length, dim]
        probs = _probs(grouped, key, bias, scale)
        with torch.autocast("cpu", enabled=False):
            out = torch.matmul(probs, value)
        ctx.save_for_backward(grouped, key, value, bias, out)
        ctx.scale = scale
        return out.view(batch, heads, length, dim)

    @staticmethod
    def backward(ctx, grad_out):
        grouped, key, value, bias, out = ctx.saved_tensors
        probs = _probs(grouped, key, bias, ctx.scale)
        with torch.autocast("cpu", enabled=False):
            grad_out = grad_out.to(grouped.dtype).reshape(out.shape)
            grad_value = torch.matmul(probs.transpose(-1, -2), grad_out)
            grad_probs = torch.matmul(grad_out, value.transpose(-1, -2)).float()
            # softmax's backward: p * (dp - sum(p * dp)), where sum(p * dp) over keys equals sum(dout * out)
            row_dot = (grad_out.float() * out.float()).sum(-1, keepdim=True)
            grad_scores = grad_probs.sub_(row_dot).mul_(probs).mul_(ctx.scale).to(grouped.dtype)
            grad_query = torch.matmul(grad_scores, key)
            grad_key = torch.matmul(grad_scores.transpose(-1, -2), grouped)
        batch, _, _, dim = grouped.shape
        return grad_query.view(batch, -1, key.shape[2], dim), grad_key, grad_value, None, None


def _probs(grouped, key, bias, scale):
    """softmax over keys of [batch, kv_heads, rows, length] scores, rows being each key head's queries head by head."""
    batch, kv_heads, rows, length = *grouped.shape[:3], key.shape[2]
    with torch.autocast("cpu", enabled=False):
        scores = torch.matmul(grouped, key.transpose(-1, -2)).float().view(batch, kv_heads, -1, length, length)
        scores = torch.add(bias.unsqueeze(2), scores, alpha=scale)
        return torch.softmax(scores, dim=-1).to(grouped.dtype).view(batch, kv_heads, rows, length)
