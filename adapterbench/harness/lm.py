"""The lm-eval model: lm-eval's HFLM over one base with switchable LoRA adapters, with a faster log-likelihood path
that scores every continuation of a shared context in one packed row and applies the LM head only where scored."""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from adapterbench.adapters.heads import find_post_head
from adapterbench.harness.prepack import packed_linears
from adapterbench.harness.segments import attention_by_segment

SHARE_MIN_CONTEXT = 8  # a context shorter than this is cheaper to repeat than to share under a packed mask
ROW_CAP = 512  # tokens in one packed row (256-1024 tried); longer groups are split into several rows
TOKEN_BUDGET = 4096  # tokens in one forward pass: measured fastest on a 2-core CPU (2048-16384 tried)
CPU_SOFTMAX_ROWS = 16  # rows of logits per fp32 log-softmax on a CPU: 3 MB of a 49,152-token vocabulary (8-128 tried)
_UNPROBED = object()


class AdapterLM(HFLM):
    """HFLM over one base in memory. `use(label)` scores the base ('base') or an adapter: one given by path is
    attached with PEFT's own `from_pretrained` for the duration (any PEFT type), one already in a PeftModel handed
    in (the trainer's) is switched on."""

    def __init__(self, model, tokenizer, *, adapters: dict[str, str] | None = None, batch_size: int = 16,
                 max_length: int | None = None, bf16_autocast: bool | None = None):
        """`adapters`: {label: PEFT adapter dir}, attached one at a time by `use`. `bf16_autocast`: score under bf16
        autocast, as the trainer runs the model (LoRA weights stay fp32). None: for a 4-bit base with bf16 compute,
        which is how QLoRA trains, so scores equal the run's own evaluations."""
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        self._adapter_paths = dict(adapters or {})
        self._pristine: dict = {}
        self._declined: set[str] = set()
        self._label = "base"
        self._post_head_found = _UNPROBED
        if bf16_autocast is None:
            bf16_autocast = getattr(model, "is_loaded_in_4bit", False) and model.dtype == torch.bfloat16
        self._bf16_autocast = bf16_autocast
        if bf16_autocast:
            self.mixed_precision_dtype = torch.bfloat16  # HFLM's autocast around generate(); off would undo ours

    @contextmanager
    def use(self, label: str):
        """Score with adapter `label` ('base': no adapter). A full-precision base gets a plain LoRA adapter merged
        into its weights for the duration (it then costs what the base costs); any other adapter, and any adapter
        on a 4-bit base, runs PEFT's unmerged forward, under bf16 autocast as QLoRA training runs it. A bf16 model
        on a CPU scores with its linear layers' weights packed for oneDNN once (prepack.py)."""
        from adapterbench.adapters.attach import attached

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16_autocast):
            self._label = label
            try:
                if label in self._adapter_paths:
                    base = self._model
                    with attached(base, self._adapter_paths[label]) as self._model:
                        try:
                            with self._merged(), packed_linears(self._model):
                                yield
                        finally:
                            self._model = base
                elif hasattr(self._model, "disable_adapter") and label != "base":
                    self._model.set_adapter(label)
                    with self._merged(), packed_linears(self._model):
                        yield
                else:
                    with (self._model.disable_adapter() if hasattr(self._model, "disable_adapter") else nullcontext(),
                          packed_linears(self._model)):
                        yield
            finally:
                self._label = "base"

    @contextmanager
    def _merged(self):
        """The active adapter merged into a full-precision base where the merge is proven exact, else as it is."""
        from adapterbench.adapters.attach import mergeable

        model = self._model
        if getattr(model, "is_loaded_in_4bit", False) or not mergeable(model):
            yield
            return
        with model.disable_adapter():
            self._merge(model.active_adapter)
            try:
                yield
            finally:
                self._restore()

    def _merge(self, label: str) -> None:
        """W = W_base + delta in fp32, rounded once to the model dtype; W_base is kept to restore it exactly
        (PEFT's merge/unmerge adds and subtracts, which drifts a bf16 base a little on every switch)."""
        from peft.tuners.lora import LoraLayer

        with torch.no_grad():
            for name, module in self._model.named_modules():
                if isinstance(module, LoraLayer) and label in module.lora_A:
                    weight = module.get_base_layer().weight
                    pristine = self._pristine.setdefault(name, weight.detach().clone())
                    merged = pristine.float() + module.get_delta_weight(label).float()
                    weight.copy_(merged.to(weight.dtype))

    def _restore(self) -> None:
        with torch.no_grad():
            modules = dict(self._model.named_modules())
            for name, pristine in self._pristine.items():
                modules[name].get_base_layer().weight.copy_(pristine)
        self._pristine.clear()

    def share_work(self, accelerator) -> None:
        """Score as one of `accelerator`'s processes (torchrun / accelerate launch): lm-eval then gives this process
        every N-th document of each task and gathers the per-sample records on the main process."""
        self.accelerator = accelerator
        self._rank, self._world_size = accelerator.process_index, accelerator.num_processes

    def gather_object(self, obj, dst: int = 0):
        """lm-eval shards a task's documents round-robin (process r takes documents r, r+N, ...) and chains what it
        gathers process after process; put back in document order, every aggregate (float sums, bootstrap resamples)
        is the one a single process computes."""
        gathered = super().gather_object(obj, dst)
        if gathered is None or self.world_size <= 1:
            return gathered
        return [_interleave(gathered)] + [_emptied(part) for part in gathered[1:]]

    def _decoder(self):
        """The transformer body (final norm included) and the LM head with whatever the model applies after it:
        hidden states for every position, logits only for the positions we score. Found through the model's own
        API (`get_decoder()`, `get_output_embeddings()`), never an attribute name."""
        causal_lm = _causal_lm(self._model)
        head, post = causal_lm.get_output_embeddings(), self._post_head()
        return causal_lm.get_decoder(), lambda hidden: post(head(hidden))

    def _post_head(self):
        """What the model does to its LM head's output (Gemma-2/3 soft-capping, Cohere's logit_scale, Granite's
        logits_scaling), proven bit for bit against the model's own forward on a probe. None: nothing we know
        reproduces it, so the fast paths are declined."""
        if self._post_head_found is _UNPROBED:
            self._post_head_found = find_post_head(_causal_lm(self._model), self.device)
        return self._post_head_found

    def _fast_path(self, longest: int) -> bool:
        """Our packed paths are proven (tests/test_architectures.py) for these architectures and plain tuner
        adapters; anything else runs lm-eval's own HFLM path, announced once."""
        reason = _decline_reason(self._model, self._label, longest)
        if reason is None and self._post_head() is None:
            reason = "its forward does something after the LM head that adapterbench cannot reproduce"
        if reason is not None and reason not in self._declined:
            self._declined.add(reason)
            logging.getLogger("adapterbench").warning("scoring with lm-eval's plain HFLM path: %s", reason)
        return reason is None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None,
                              need_greedy: bool = True):
        longest = max((len(context) + len(continuation) for _, context, continuation in requests), default=0)
        if not self._fast_path(min(longest, self.max_length + 1)):
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        body, head = self._decoder()
        segments = _segments(requests, self.max_length)
        prefix = _common_prefix(segments, body, self.device)
        rows = _bin_pack(segments)
        results: list = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="log-likelihoods")
        start = 0
        while start < len(rows):
            width = _row_length(rows[start])
            size = max(1, min(override_bs or self.batch_size, TOKEN_BUDGET // width))
            batch = rows[start:start + size]
            start += size
            for index, answer in _score_rows(batch, body, head, self.device, prefix, need_greedy):
                results[index] = answer
                if requests[index][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
                progress.update(1)
        progress.close()
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """All windows of all documents in one call, so batches are formed over the whole set by length."""
        from lm_eval import utils

        windows, owners = [], []
        for owner, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(owner)
        totals = [0.0] * len(requests)
        scored = self._loglikelihood_tokens(windows, disable_tqdm, need_greedy=False)  # perplexity ignores it
        for owner, (loglikelihood, _) in zip(owners, scored):
            totals[owner] += loglikelihood
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        """HFLM's generation, but the left-padded prompts are first run packed (no padding computed) into a KV
        cache, so `generate` only decodes."""
        mask = generation_kwargs.get("attention_mask")
        if mask is None or context.shape[1] < 2 or not self._fast_path(max_length):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        body, _ = self._decoder()
        generation_kwargs["past_key_values"] = _prefill_cache(context, mask, body, self.device)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


def _segments(requests, max_length: int) -> list[dict]:
    """Group requests by context; a segment holds a context once and one branch per continuation. A branch attends
    to the context and to itself, with positions continuing from the context, so it sees exactly what it would see
    alone after the context."""
    groups: dict[tuple, list] = {}
    for index, (_, context, continuation) in enumerate(requests):
        tokens = (context + continuation)[-(max_length + 1):]  # left-truncate as HFLM does
        context = tokens[:len(tokens) - len(continuation)]
        groups.setdefault(tuple(context), []).append((index, continuation))
    segments = []
    for context, members in groups.items():
        share = len(context) >= SHARE_MIN_CONTEXT
        segment = None
        for index, continuation in members:
            branch = continuation[:-1]  # the last token is only predicted, never fed
            if segment is None or not share or len(segment["tokens"]) + len(branch) > ROW_CAP:
                segment = {"tokens": list(context), "context": len(context), "branches": []}
                segments.append(segment)
            segment["branches"].append((index, len(segment["tokens"]), continuation))
            segment["tokens"].extend(branch)
    return segments


def _bin_pack(segments: list[dict]) -> list[list[dict]]:
    """Several segments share a row (each attending only to itself), so batches carry almost no padding.
    First fit, longest first; rows come out longest first."""
    rows: list[list[dict]] = []
    lengths: list[int] = []
    for segment in sorted(segments, key=lambda s: -len(s["tokens"])):
        n = len(segment["tokens"])
        r = next((i for i, length in enumerate(lengths) if length + n <= ROW_CAP), None)
        if r is None:
            rows.append([segment])
            lengths.append(n)
        else:
            rows[r].append(segment)
            lengths[r] += n
    return [row for _, row in sorted(zip(lengths, rows), key=lambda pair: -pair[0])]


def _row_length(row: list[dict]) -> int:
    return sum(len(segment["tokens"]) for segment in row)


def _prefill_cache(context: torch.Tensor, mask: torch.Tensor, body, device):
    """KV cache of every left-padded prompt but its last token, computed on the real tokens only: the opening all
    prompts share (a chat template's system prompt) once, the rest packed into rows (each attending to that opening
    and to itself, positions continuing from it), and the keys and values placed back right-aligned, where the
    padded batch expects them."""
    from transformers import DynamicCache

    lengths = mask.sum(dim=1).tolist()
    width = context.shape[1]
    prompts = [context[b, width - n:width - 1].tolist() for b, n in enumerate(lengths)]  # all but the last token
    shared = _shared_opening(prompts, min_prompts=2)
    prefix_kv = _prefix_keys_values(prompts[0][:shared], body, device) if shared else None
    segments = [prompt[shared:] for prompt in prompts]
    rows: list[list[int]] = []  # members (prompt indexes) of each packed row
    for b in sorted(range(len(segments)), key=lambda i: -len(segments[i])):
        row = next((r for r in rows if sum(len(segments[i]) for i in r) + len(segments[b]) <= ROW_CAP), None)
        (row.append(b) if row is not None else rows.append([b]))
    row_width = max(1, max(sum(len(segments[i]) for i in row) for row in rows))
    ids = torch.zeros(len(rows), row_width, dtype=torch.long)
    positions = torch.zeros(len(rows), row_width, dtype=torch.long)
    attend = torch.zeros(len(rows), 1, row_width, shared + row_width, dtype=torch.bool)
    attend[:, :, :, :shared] = True
    places = {}
    for r, row in enumerate(rows):
        offset = 0
        for b in row:
            n = len(segments[b])
            ids[r, offset:offset + n] = torch.tensor(segments[b], dtype=torch.long)
            positions[r, offset:offset + n] = torch.arange(shared, shared + n)
            own = slice(shared + offset, shared + offset + n)
            attend[r, 0, offset:offset + n, own] = torch.ones(n, n, dtype=torch.bool).tril()
            places[b] = (r, offset, n)
            offset += n
        attend[r, 0, offset:, 0] = True  # padding attends to something, so softmax never sees an all-masked row
    packed = _expanded_cache(prefix_kv, len(rows)) if prefix_kv else DynamicCache()
    with torch.no_grad(), attention_by_segment([place for place in places.values() if place[2]], len(rows),
                                               row_width, shared):
        body(input_ids=ids.to(device), attention_mask=_as_attention_mask(attend, body).to(device),
             position_ids=positions.to(device), past_key_values=packed, use_cache=True)
    layers = []
    for layer in packed.layers:
        keys = layer.keys.new_zeros(len(segments), layer.keys.shape[1], width - 1, layer.keys.shape[3])
        values = torch.zeros_like(keys)
        for b, (r, offset, n) in places.items():
            start = width - 1 - shared - n
            keys[b, :, start:start + shared] = layer.keys[r, :, :shared]
            values[b, :, start:start + shared] = layer.values[r, :, :shared]
            keys[b, :, start + shared:] = layer.keys[r, :, shared + offset:shared + offset + n]
            values[b, :, start + shared:] = layer.values[r, :, shared + offset:shared + offset + n]
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers)


def _shared_opening(token_lists: list[list[int]], min_prompts: int) -> int:
    """How many opening tokens all lists share, when that is worth running once (0 if not)."""
    if len(token_lists) < min_prompts:
        return 0
    first = token_lists[0]
    length = min(len(tokens) for tokens in token_lists)
    for tokens in token_lists[1:]:
        length = next((i for i in range(length) if tokens[i] != first[i]), length)
    return length if length >= SHARE_MIN_CONTEXT else 0


def _prefix_keys_values(tokens: list[int], body, device) -> list[tuple]:
    """Per-layer (keys, values) of `tokens` run alone from position 0."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        body(input_ids=torch.tensor([tokens], device=device), past_key_values=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def _expanded_cache(prefix_kv: list[tuple], rows: int):
    """A cache holding the shared prefix's keys and values once for each of `rows` rows."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1).contiguous(),
                                         v.expand(rows, -1, -1, -1).contiguous()) for k, v in prefix_kv])


def _common_prefix(segments: list[dict], body, device):
    """Prompts of a task usually open alike (system prompt, chat markup, "Question:"): run that prefix once and let
    every segment attend to its cached keys and values. Returns (length, per-layer (keys, values)) or None."""
    # each segment keeps its last context token: it predicts
    length = _shared_opening([s["tokens"][:s["context"] - 1] for s in segments], min_prompts=4)
    if not length:
        return None
    prefix_kv = _prefix_keys_values(segments[0]["tokens"][:length], body, device)
    for segment in segments:
        segment["tokens"] = segment["tokens"][length:]
        segment["context"] -= length
        segment["branches"] = [(index, offset - length, continuation)
                               for index, offset, continuation in segment["branches"]]
    return length, prefix_kv


def _score_rows(rows, body, head, device, prefix=None, need_greedy: bool = True):
    """One forward pass over padded rows of packed segments; yields (request index, (log-likelihood, is_greedy))."""
    shared, prefix_kv = prefix or (0, None)
    width = max(_row_length(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), 1, width, shared + width, dtype=torch.bool)
    mask[:, :, :, :shared] = True
    gather_rows, gather_cols, targets, owners, spans = [], [], [], [], []
    for r, row in enumerate(rows):
        start = 0
        for segment in row:
            n, ctx = len(segment["tokens"]), segment["context"]
            spans.append((r, start, n))
            ids[r, start:start + n] = torch.tensor(segment["tokens"])
            positions[r, start:start + ctx] = torch.arange(shared, shared + ctx)
            context_keys = slice(shared + start, shared + start + ctx)
            mask[r, 0, start:start + ctx, context_keys] = torch.ones(ctx, ctx, dtype=torch.bool).tril()
            mask[r, 0, start + ctx:start + n, context_keys] = True
            for index, offset, continuation in segment["branches"]:
                length, at = len(continuation) - 1, start + offset
                positions[r, at:at + length] = torch.arange(shared + ctx, shared + ctx + length)
                own = slice(shared + at, shared + at + length)
                mask[r, 0, at:at + length, own] = torch.ones(length, length, dtype=torch.bool).tril()
                # continuation[0] is predicted from the context's last position, continuation[j] from branch token j-1
                predictors = [start + ctx - 1] + list(range(at, at + length))
                gather_rows += [r] * len(predictors)
                gather_cols += predictors
                targets += continuation
                owners.append((index, len(predictors)))
            start += n
        mask[r, 0, start:, shared] = True  # padding attends to something, so softmax never sees an all-masked row
    cache = _expanded_cache(prefix_kv, len(rows)) if prefix_kv is not None else None
    with torch.no_grad(), attention_by_segment(spans, len(rows), width, shared):
        hidden = body(input_ids=ids.to(device), attention_mask=_as_attention_mask(mask, body).to(device),
                      position_ids=positions.to(device), past_key_values=cache, use_cache=cache is not None,
                      ).last_hidden_state
        picked = hidden[torch.tensor(gather_rows, device=device), torch.tensor(gather_cols, device=device)]
        token_ll, greedy = _head_scores(picked, torch.tensor(targets, device=device), head, need_greedy)
    start = 0
    for index, count in owners:
        yield index, (float(token_ll[start:start + count].sum()), bool(greedy[start:start + count].all()))
        start += count


def _head_scores(hidden, targets, head, need_greedy: bool = True, rows: int = 256):
    """Log-probability of each target and whether it is the argmax, in fp32. The head's matmul takes `rows` rows
    at a time (it runs fastest on many); on a CPU the fp32 log-softmax takes CPU_SOFTMAX_ROWS at a time, so that
    their vocabulary-wide logits stay in cache: the same numbers, 2-4x faster than over 256 rows at once (a
    microbenchmark: 49,152-token vocabulary, bf16 and fp32 logits, 2-core AVX512-BF16 EPYC)."""
    softmax_rows = CPU_SOFTMAX_ROWS if hidden.device.type == "cpu" else rows
    token_ll, greedy = [], []
    for h, t in zip(hidden.split(rows), targets.split(rows)):
        logits = head(h)
        for part, wanted in zip(logits.split(softmax_rows), t.split(softmax_rows)):
            part = part.float()
            token_ll.append(-F.cross_entropy(part, wanted, reduction="none"))
            greedy.append(part.argmax(dim=-1) == wanted if need_greedy else torch.zeros_like(wanted, dtype=torch.bool))
    return torch.cat(token_ll), torch.cat(greedy)


def _interleave(parts: list):
    """Round-robin shards ({task: [items]} or {task: {metric: [values]}}, one per process) merged in document order."""
    if isinstance(parts[0], dict):
        return {key: _interleave([part[key] for part in parts]) for key in parts[0]}
    merged = []
    for i in range(max(len(part) for part in parts)):
        merged += [part[i] for part in parts if i < len(part)]
    return merged


def _emptied(part):
    return {key: _emptied(value) for key, value in part.items()} if isinstance(part, dict) else []


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# model types whose bodies take our packed rows (a 4D mask and position ids) exactly as HFLM's padded batches:
# each is proven in tests/test_architectures.py; a new one joins this list with its row in that matrix
PACKED_ARCHITECTURES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "phi3", "phi", "gemma",
                                  "gemma2", "gemma3_text", "cohere", "granite", "olmo2", "starcoder2", "falcon", "gpt2",
                                  "gpt_neox", "opt"})


def _decline_reason(model, label: str, longest: int) -> str | None:
    config = _causal_lm(model).config
    if config.model_type not in PACKED_ARCHITECTURES:
        return f"the fast path is not proven for {config.model_type!r} bases"
    if getattr(config, "alibi", False):
        return "ALiBi positions come from the padding mask, not from position ids"
    window = getattr(config, "sliding_window", None)
    if window and longest > window:
        return f"requests longer than the {window}-token sliding window (our packed rows do not apply it)"
    active = getattr(model, "active_peft_config", None) if label != "base" else None
    if active is not None and active.is_prompt_learning:
        return f"{active.peft_type.value} adapters feed virtual tokens through PEFT's own forward"
    return None


def _as_attention_mask(mask: torch.Tensor, body) -> torch.Tensor:
    """SDPA and flex take a boolean mask; eager attention adds the mask to the scores."""
    if getattr(body.config, "_attn_implementation", "sdpa") == "eager":
        dtype = body.dtype
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return mask
