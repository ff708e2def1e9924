"""Attention by segment: packed rows' segments gathered into batches of like length give what SDPA over the whole
masked rows gives, and any call the plan does not fit exactly runs over the whole rows."""

import pytest
import torch

from adapterbench.harness.segments import attention_by_segment, sdpa_by_segment

HEADS, KV_HEADS, DIM = 6, 2, 8


class Attention(torch.nn.Module):
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


def packed(prefix: int, rows: list[list[tuple[int, list[int]]]], width: int):
    """A boolean mask like the harness's: each segment (context length, branch lengths) attends causally to its
    context, each branch to the context and to itself, and all to the `prefix` cached keys; padding rows attend to
    key 0. Returns (mask, segments as (row, start, length), the real query positions)."""
    mask = torch.zeros(len(rows), 1, width, prefix + width, dtype=torch.bool)
    mask[..., :prefix] = True
    segments, real = [], []
    for r, row in enumerate(rows):
        start = 0
        for context, branches in row:
            n = context + sum(branches)
            keys = slice(prefix + start, prefix + start + context)
            mask[r, 0, start:start + context, keys] = torch.ones(context, context, dtype=torch.bool).tril()
            mask[r, 0, start + context:start + n, keys] = True
            at = start + context
            for length in branches:
                own = slice(prefix + at, prefix + at + length)
                mask[r, 0, at:at + length, own] = torch.ones(length, length, dtype=torch.bool).tril()
                at += length
            segments.append((r, start, n))
            real += [(r, start + i) for i in range(n)]
            start += n
        mask[r, 0, start:, :prefix] = False
        mask[r, 0, start:, 0] = True
    return mask, segments, real


def attend(mask, width, prefix, segments=None, plan_width=None):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    generator = torch.Generator().manual_seed(0)
    rows = mask.shape[0]
    query = torch.randn(rows, HEADS, width, DIM, generator=generator)
    key, value = (torch.randn(rows, KV_HEADS, prefix + width, DIM, generator=generator) for _ in range(2))
    if segments is None:
        return sdpa_attention_forward(Attention(), query, key, value, mask, dropout=0.0, scaling=0.3)[0], None
    with attention_by_segment(segments, rows, plan_width or width, prefix) as plan:
        out = sdpa_by_segment(Attention(), query, key, value, mask, dropout=0.0, scaling=0.3)[0]
    return out, plan


ROWS = [[(5, [2, 1, 3, 1]), (9, [1, 1]), (3, [])], [(12, [4, 4]), (2, [1])], [(1, [])]]
WIDTH = 32


@pytest.mark.parametrize("prefix", [0, 4])
def test_segments_gathered_by_length_equal_sdpa_over_the_whole_masked_rows(prefix):
    mask, segments, real = packed(prefix, ROWS, WIDTH)
    whole, _ = attend(mask, WIDTH, prefix)
    by_segment, plan = attend(mask, WIDTH, prefix, segments)
    assert plan.used == 1
    for r, position in real:
        torch.testing.assert_close(by_segment[r, position], whole[r, position], rtol=1e-6, atol=1e-6)


def test_plain_causal_segments_run_without_a_mask():
    rows = [[(7, []), (11, []), (6, [])], [(13, []), (5, [])]]
    mask, segments, real = packed(0, rows, WIDTH)
    whole, _ = attend(mask, WIDTH, 0)
    by_segment, plan = attend(mask, WIDTH, 0, segments)
    groups = plan.groups_for(torch.zeros(2, HEADS, WIDTH, DIM), torch.zeros(2, KV_HEADS, WIDTH, DIM), mask, {})
    assert plan.used == 1 and all(group["mask"] is None for group in groups)
    for r, position in real:
        torch.testing.assert_close(by_segment[r, position], whole[r, position], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("change", ["a pair across segments", "two segments overlapping", "another shape"])
def test_a_call_the_plan_does_not_fit_runs_over_the_whole_rows(change):
    mask, segments, _ = packed(4, ROWS, WIDTH)
    if change == "a pair across segments":
        mask[0, 0, 20, 4 + 2] = True  # a query of the second segment sees a key of the first
    elif change == "two segments overlapping":
        segments = segments + [(0, 10, 4)]
    width = WIDTH - 1 if change == "another shape" else WIDTH  # the rows the model runs on are not the plan's
    mask = mask[:, :, :width, :4 + width]
    whole, _ = attend(mask, width, 4)
    fallback, plan = attend(mask, width, 4, segments, plan_width=WIDTH)
    assert plan.used == 0 and torch.equal(fallback, whole)
