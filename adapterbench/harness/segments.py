"""Attention over packed rows one segment at a time: SDPA over a whole packed row computes every segment against
every other only to mask it out, so segments of like length are gathered into batches of their own instead."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

GROUP_SLACK = 0.8  # a segment joins a length group while it is at least this fraction of the group's longest
_PLAN: ContextVar = ContextVar("adapterbench_segment_plan", default=None)
_sdpa = None  # transformers' own SDPA attention: what every segment group, and every declined call, runs through
IGNORED_TENSORS = {"position_ids", "cache_position"}  # passed down to attention, never read by SDPA


@contextmanager
def attention_by_segment(segments: list[tuple[int, int, int]], rows: int, width: int, prefix: int = 0):
    """While active, a model's SDPA attention over `rows` x `width` queries runs per segment: (row, start, length)
    attends only to itself and to the first `prefix` keys (a shared cached prefix). The plan is checked against the
    attention mask itself: a call whose mask allows any other (query, key) pair, or that SDPA's inputs do not fit,
    runs SDPA over the whole rows as before. Queries in no segment (a row's padding) come out as zeros. Yields the
    plan; its `used` counts the calls it took."""
    _install()
    plan = SegmentPlan(segments, rows, width, prefix)
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


def _install() -> None:
    """Register our SDPA under transformers' "sdpa" name; with no plan active it is transformers' own."""
    global _sdpa
    if _sdpa is None:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        _sdpa = sdpa_attention_forward
        AttentionInterface.register("sdpa", sdpa_by_segment)


def sdpa_by_segment(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention, run on the active plan's segment groups where the plan fits this call."""
    plan = _PLAN.get()
    groups = plan.groups_for(query, key, attention_mask, kwargs) if plan is not None else None
    if groups is None:
        return _sdpa(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    batch, heads, length, dim = query.shape
    flat_query = query.transpose(1, 2).reshape(batch * length, heads, dim)
    flat_key, flat_value = (t.transpose(1, 2).reshape(-1, t.shape[1], t.shape[3]) for t in (key, value))
    out = query.new_zeros(batch * length, heads, value.shape[3])
    for group in groups:
        n = group["count"]
        grouped = [t.index_select(0, index).view(n, -1, t.shape[1], t.shape[2]).transpose(1, 2)
                   for t, index in ((flat_query, group["query_index"]), (flat_key, group["key_index"]),
                                    (flat_value, group["key_index"]))]
        attended, _ = _sdpa(module, *grouped, group["mask"], is_causal=group["mask"] is None, **kwargs)
        out.index_copy_(0, group["dest"], attended.reshape(-1, heads, value.shape[3]).index_select(0, group["src"]))
    plan.used += 1
    return out.view(batch, length, heads, value.shape[3]), None


class SegmentPlan:
    """Index maps of length groups of segments into the packed rows; each group's mask is gathered from the first
    attention mask it meets and kept only if it holds every pair that mask allows."""

    def __init__(self, segments: list[tuple[int, int, int]], rows: int, width: int, prefix: int):
        self.rows, self.width, self.prefix, self.used = rows, width, prefix, 0
        self._groups: list[list[tuple[int, int, int]]] = []
        for segment in sorted(segments, key=lambda s: -s[2]):
            if self._groups and segment[2] >= GROUP_SLACK * self._groups[-1][0][2]:
                self._groups[-1].append(segment)
            else:
                self._groups.append([segment])
        self._checked: tuple | None = None  # (mask, its groups or None)

    def groups_for(self, query, key, attention_mask, kwargs) -> list[dict] | None:
        if (attention_mask is None or attention_mask.dtype != torch.bool or attention_mask.dim() != 4
                or attention_mask.shape[1] != 1 or query.dim() != 4
                or tuple(attention_mask.shape) != (self.rows, 1, self.width, self.prefix + self.width)
                or query.shape[0] != self.rows or query.shape[2] != self.width
                or key.shape[2] != self.prefix + self.width or kwargs.get("softcap") is not None
                or kwargs.get("dropout", 0.0) or kwargs.get("output_attentions")
                or any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k not in IGNORED_TENSORS)):
            return None
        if self._checked is None or self._checked[0] is not attention_mask:
            self._checked = (attention_mask, self._gather(attention_mask))
        return self._checked[1]

    def _gather(self, mask: torch.Tensor) -> list[dict] | None:
        """Each group's index maps and mask (None where it is plain causal); None unless together they allow exactly
        the (query, key) pairs `mask` allows for every segment's queries."""
        device, keys = mask.device, self.prefix + self.width
        flat_mask = mask.reshape(self.rows * self.width, keys)
        groups, allowed, kept, placed = [], 0, 0, []
        for members in self._groups:
            n, longest = len(members), members[0][2]
            rows = torch.tensor([row for row, _, _ in members], device=device)
            starts = torch.tensor([start for _, start, _ in members], device=device)
            lengths = torch.tensor([length for _, _, length in members], device=device)
            steps = torch.arange(longest, device=device)
            real = steps[None, :] < lengths[:, None]  # [n, longest]
            # padding slots repeat the segment's first token: their output is dropped, their keys masked out
            columns = torch.where(real, starts[:, None] + steps[None, :], starts[:, None])
            query_index = (rows[:, None] * self.width + columns).flatten()
            key_columns = torch.cat([torch.arange(self.prefix, device=device).expand(n, -1),
                                     columns + self.prefix], dim=1)  # [n, prefix + longest]
            key_real = torch.cat([torch.ones(n, self.prefix, dtype=torch.bool, device=device), real], dim=1)
            sub = flat_mask[query_index].view(n, longest, keys).gather(
                2, key_columns[:, None, :].expand(n, longest, -1)) & key_real[:, None, :]
            src = torch.nonzero(real.flatten()).flatten()
            dest = query_index[src]
            placed.append(dest)
            allowed += int(flat_mask[dest].sum())
            kept += int(sub.view(n * longest, -1)[src].sum())
            causal = torch.ones(longest, longest, dtype=torch.bool, device=device).tril()
            plain = self.prefix == 0 and bool((sub == causal)[real].all())
            groups.append({"count": n, "query_index": query_index,
                           "key_index": (rows[:, None] * keys + key_columns).flatten(),
                           "mask": None if plain else sub[:, None], "src": src, "dest": dest})
        placed = torch.cat(placed)
        return groups if allowed == kept and placed.unique().numel() == placed.numel() else None
