"""The lm-eval model: lm-eval's HFLM over one base with switchable LoRA adapters, with a faster log-likelihood path
that scores every continuation of a shared context in one packed row and applies the LM head only where scored."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

SHARE_MIN_CONTEXT = 8  # a context shorter than this is cheaper to repeat than to share under a packed mask
ROW_CAP = 512  # tokens in one packed row; longer groups are split into several rows
TOKEN_BUDGET = 8192  # padded tokens in one forward pass


class AdapterLM(HFLM):
    """HFLM over a (Peft)model already in memory. `use(label)` switches between the base ('base') and adapters."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None):
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        self.active = "base"

    @contextmanager
    def use(self, label: str):
        """Score with adapter `label`; 'base' runs the base with every adapter disabled."""
        model = self._model
        if label == "base":
            if hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    self.active = label
                    yield
            else:
                self.active = label
                yield
        else:
            model.set_adapter(label)
            self.active = label
            yield

    def _decoder(self):
        """The transformer body (final norm included) and the LM head: hidden states for every position, logits only
        for the positions we score."""
        model = self._model
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        return causal_lm.model, causal_lm.get_output_embeddings()

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        rows = _pack_rows(requests, self.max_length)
        rows.sort(key=lambda row: -len(row["tokens"]))
        results: list = [None] * len(requests)
        body, head = self._decoder()
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="log-likelihoods")
        start = 0
        while start < len(rows):
            width = len(rows[start]["tokens"])
            size = max(1, min(self._rows_per_batch(override_bs), TOKEN_BUDGET // width))
            batch = rows[start:start + size]
            start += size
            for index, answer in _score_rows(batch, body, head, self.device):
                results[index] = answer
                if requests[index][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
                progress.update(1)
        progress.close()
        return results

    def _rows_per_batch(self, override_bs: int | None) -> int:
        if override_bs:
            return override_bs
        return self.batch_size if isinstance(self.batch_size, int) else TOKEN_BUDGET


def _pack_rows(requests, max_length: int) -> list[dict]:
    """Group requests by context; each row holds a context once and one branch per continuation. A branch attends
    to the context and to itself, with positions continuing from the context, so it sees exactly what it would see
    alone after the context."""
    groups: dict[tuple, list] = {}
    for index, (_, context, continuation) in enumerate(requests):
        tokens = (context + continuation)[-(max_length + 1):]  # left-truncate as HFLM does
        context = tokens[:len(tokens) - len(continuation)]
        groups.setdefault(tuple(context), []).append((index, continuation))
    rows = []
    for context, members in groups.items():
        share = len(context) >= SHARE_MIN_CONTEXT
        row = None
        for index, continuation in members:
            branch = continuation[:-1]  # the last token is only predicted, never fed
            if row is None or not share or len(row["tokens"]) + len(branch) > ROW_CAP:
                row = {"tokens": list(context), "context": len(context), "branches": []}
                rows.append(row)
            row["branches"].append((index, len(row["tokens"]), continuation))
            row["tokens"].extend(branch)
    return rows


def _score_rows(rows, body, head, device):
    """One forward pass over padded packed rows; yields (request index, (log-likelihood, is_greedy))."""
    width = max(len(row["tokens"]) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), 1, width, width, dtype=torch.bool)
    gather_rows, gather_cols, targets, owners = [], [], [], []
    for r, row in enumerate(rows):
        n, ctx = len(row["tokens"]), row["context"]
        ids[r, :n] = torch.tensor(row["tokens"])
        positions[r, :ctx] = torch.arange(ctx)
        mask[r, 0, :ctx, :ctx] = torch.ones(ctx, ctx, dtype=torch.bool).tril()
        mask[r, 0, ctx:, :ctx] = True
        for index, offset, continuation in row["branches"]:
            length = len(continuation) - 1
            positions[r, offset:offset + length] = torch.arange(ctx, ctx + length)
            mask[r, 0, offset:offset + length, offset:offset + length] = torch.ones(length, length, dtype=torch.bool).tril()
            # continuation[0] is predicted from the context's last position, continuation[j] from branch token j-1
            predictors = [ctx - 1] + list(range(offset, offset + length))
            gather_rows += [r] * len(predictors)
            gather_cols += predictors
            targets += continuation
            owners.append((index, len(predictors)))
        mask[r, 0, n:, 0] = True  # padding attends to something, so softmax never sees an all-masked row
    with torch.no_grad():
        hidden = body(input_ids=ids.to(device), attention_mask=_as_attention_mask(mask, body).to(device),
                      position_ids=positions.to(device)).last_hidden_state
        picked = hidden[torch.tensor(gather_rows, device=device), torch.tensor(gather_cols, device=device)]
        logprobs = F.log_softmax(head(picked).float(), dim=-1)
        targets_t = torch.tensor(targets, device=device)
        token_ll = logprobs.gather(1, targets_t[:, None]).squeeze(1)
        greedy = logprobs.argmax(dim=-1) == targets_t
    start = 0
    for index, count in owners:
        yield index, (float(token_ll[start:start + count].sum()), bool(greedy[start:start + count].all()))
        start += count


def _as_attention_mask(mask: torch.Tensor, body) -> torch.Tensor:
    """SDPA and flex take a boolean mask; eager attention adds the mask to the scores."""
    if getattr(body.config, "_attn_implementation", "sdpa") == "eager":
        dtype = body.dtype
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return mask
