"""The trainer's loss: the chunked head and cross-entropy equal one cross-entropy over every supervised row, with the
same gradients, and the loss is the model's own on every architecture (soft-capped and scaled logits included),
through the fast path or the model's own forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adapterbench.training import loop
from adapterbench.training.loop import CompletionLoss, supervised_nll
from tiny_models import build_arch_model


def rows_head_targets(dtype=torch.float32, head_trains=True):
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(50, 16, generator=generator, dtype=dtype).requires_grad_()
    head = torch.nn.Linear(16, 97, bias=False).to(dtype)
    head.weight.requires_grad_(head_trains)
    targets = torch.randint(0, 97, (50,), generator=generator)
    return rows, head, targets


def loss_and_grads(loss_of, rows, head, scale=0.37):
    rows.grad = head.weight.grad = None
    loss = loss_of()
    (loss * scale).backward()
    return loss.detach(), rows.grad.clone(), None if head.weight.grad is None else head.weight.grad.clone()


@pytest.mark.parametrize("head_trains", [False, True])
def test_chunked_loss_and_gradients_equal_one_cross_entropy_over_all_rows(head_trains):
    rows, head, targets = rows_head_targets(head_trains=head_trains)
    expected = loss_and_grads(lambda: F.cross_entropy(head(rows), targets, reduction="sum"), rows, head)
    chunked = loss_and_grads(lambda: supervised_nll(rows, head, lambda x: x, targets, chunk_rows=7), rows, head)
    assert chunked[0] == pytest.approx(expected[0].item(), rel=1e-6)
    torch.testing.assert_close(chunked[1], expected[1], rtol=1e-5, atol=1e-7)
    if head_trains:
        torch.testing.assert_close(chunked[2], expected[2], rtol=1e-5, atol=1e-6)
    else:
        assert chunked[2] is None
    with torch.no_grad():  # validation: no gradient kept, the same sum
        assert supervised_nll(rows, head, lambda x: x, targets, chunk_rows=7).item() == pytest.approx(
            expected[0].item(), rel=1e-6)


def test_chunked_loss_under_bf16_autocast_rounds_like_the_unchunked_one():
    rows, head, targets = rows_head_targets(torch.bfloat16, head_trains=False)

    def under_autocast(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    expected = loss_and_grads(lambda: under_autocast(
        lambda: F.cross_entropy(head(rows).float(), targets, reduction="sum")), rows, head)
    chunked = loss_and_grads(lambda: under_autocast(
        lambda: supervised_nll(rows, head, lambda x: x, targets, chunk_rows=8)), rows, head)
    assert chunked[0] == pytest.approx(expected[0].item(), rel=1e-6)  # the logits are the same bf16 numbers
    assert chunked[1].dtype == torch.bfloat16
    # the loss's scale is applied after the bf16 gradient, not before: bf16 rounding apart
    torch.testing.assert_close(chunked[1], expected[1], rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("architecture", ["llama", "gemma2", "cohere", "granite", "gpt2"])
@pytest.mark.parametrize("fast_path", [True, False])
def test_the_training_loss_is_the_models_own_loss(architecture, fast_path, tmp_path, monkeypatch):
    """gemma2 soft-caps its logits at 2.0, cohere and granite scale them: a loss on the bare head's output would
    differ from the model's own on each of them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if not fast_path:  # a head transform the probe does not know: the model's own forward
        monkeypatch.setattr("adapterbench.adapters.heads.find_post_head", lambda causal_lm, device: None)
    model = AutoModelForCausalLM.from_pretrained(build_arch_model(architecture, tmp_path / architecture))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    loss_fn = CompletionLoss(peft_model)
    assert (loss_fn.post_head is not None) == fast_path
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (3, 20), generator=generator)
    attention = torch.ones_like(ids)
    attention[2, 15:] = 0
    labels = ids.clone()
    labels[:, :8] = loop.IGNORE
    labels[2, 15:] = loop.IGNORE
    summed, count = loss_fn(ids, attention, labels)
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    supervised = labels[:, 1:] != loop.IGNORE
    expected = F.cross_entropy(logits[supervised].float(), labels[:, 1:][supervised], reduction="sum")
    assert int(count) == int(supervised.sum()) == 2 * 12 + 7
    assert summed.item() == pytest.approx(expected.item(), rel=1e-5)
