"""train(): the QLoRA loop, to be read top to bottom: set up, evaluate the baseline at step 0, then optimizer steps
(gradient accumulation, clipping, AdamW) with evaluations, early stopping and checkpoints along the way."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from adapterbench.datafiles.reading import read_records
from adapterbench.atomic import atomic_dir, remove_stale, scratch_dir, write_text
from adapterbench.config import TrainConfig
from adapterbench.digest import file_sha256
from adapterbench.errors import UserError
from adapterbench.provenance import base_sha, environment, git_commit
from adapterbench.record_types import Evaluation, ModelEntry, Score, SuiteRef
from adapterbench.trackers import finish_trackers, flat_config, tracker_problem
from adapterbench.training.attention import use_training_attention
from adapterbench.training.checkpoints import (copy_adapter, list_checkpoints, load_checkpoint, prune_checkpoints,
                                               rng_state, save_checkpoint, save_peft_dir, set_rng_state)
from adapterbench.training.collate import IGNORE, collate, epoch_batches, load_examples
from adapterbench.training.dropout import use_fast_lora_dropout
from adapterbench.training.lora_forward import use_lean_lora_forward

ADAPTER_NAME = "default"  # PEFT's name for the adapter of get_peft_model
LOSS_CHUNK_ROWS = 64  # supervised positions whose logits (49k wide for the default model) exist at once
# steps between handing freed memory back to the OS: the steps after each hand-back fault every page in again, which
# the kernel zeroes (at every step: ~8 % of the CPU time on the 2-core machine; at every 8th: ~3 %, +4-9 % peak RSS)
FREED_MEMORY_EVERY = 8


class CompletionLoss(torch.nn.Module):
    """Summed cross-entropy over supervised tokens, with the LM head applied only there, a chunk of rows at a time
    (supervised_nll). A base whose head output we cannot reproduce (heads.find_post_head) takes the model's own
    logits instead. A module, so `accelerate` can wrap it for DDP."""

    def __init__(self, peft_model):
        from adapterbench.adapters.heads import find_post_head

        super().__init__()
        self.causal_lm = peft_model.get_base_model()
        self.post_head = find_post_head(self.causal_lm, self.causal_lm.device)

    def forward(self, input_ids, attention_mask, labels):
        targets = labels[:, 1:]
        supervised = targets != IGNORE
        if self.post_head is None:
            logits = self.causal_lm(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
            summed = F.cross_entropy(logits[supervised].float(), targets[supervised], reduction="sum")
        else:
            hidden = self.causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            summed = supervised_nll(hidden[:, :-1][supervised], self.causal_lm.get_output_embeddings(), self.post_head,
                                    targets[supervised])
        return summed, supervised.sum()


def supervised_nll(rows, head, post_head, targets, chunk_rows: int = LOSS_CHUNK_ROWS):
    """sum(cross_entropy(post_head(head(rows)), targets)) with the logits of chunk_rows rows at a time: the rows'
    gradient (and the head's, if it trains) is computed in the forward pass, chunk by chunk, so neither the logits
    nor their gradients are ever held for every supervised position at once (bench/RESULTS.md: the training peak)."""
    if not torch.is_grad_enabled():
        return sum(_chunk_nll(rows[i:i + chunk_rows], head, post_head, targets[i:i + chunk_rows])
                   for i in range(0, len(rows), chunk_rows))
    return _ChunkedNLL.apply(rows, head.weight, head, post_head, targets, chunk_rows)


def _chunk_nll(rows, head, post_head, targets):
    return F.cross_entropy(post_head(head(rows)).float(), targets, reduction="sum")


class _ChunkedNLL(torch.autograd.Function):
    """The same per-chunk operations as autograd on the unchunked loss, differentiated where the logits exist;
    backward only scales the gradients kept (the loss's gradient is one scalar)."""

    @staticmethod
    def forward(ctx, rows, weight, head, post_head, targets, chunk_rows):
        wants_rows, wants_weight = ctx.needs_input_grad[:2]
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad_rows = torch.empty_like(rows) if wants_rows else None
        grad_weight = torch.zeros_like(weight) if wants_weight else None
        for start in range(0, len(rows), chunk_rows):
            part = rows[start:start + chunk_rows].detach().requires_grad_(wants_rows)
            with torch.enable_grad():
                loss = _chunk_nll(part, head, post_head, targets[start:start + chunk_rows])
            inputs = [x for x, wanted in ((part, wants_rows), (weight, wants_weight)) if wanted]
            grads = list(torch.autograd.grad(loss, inputs)) if inputs else []
            if wants_rows:
                grad_rows[start:start + chunk_rows] = grads.pop(0)
            if wants_weight:
                grad_weight += grads.pop(0)
            total += loss.detach()
        ctx.save_for_backward(grad_rows, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad):
        grad_rows, grad_weight = ctx.saved_tensors
        return (grad_rows * grad if grad_rows is not None else None,
                grad_weight * grad if grad_weight is not None else None, None, None, None, None)


def train(config: TrainConfig, *, resume: bool = False, store: str | Path | None = None,
          show_progress: bool = True) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, gather_object
    from peft import LoraConfig, get_peft_model

    from adapterbench.adapters.models import load_model, stay_offline

    started = time.time()
    stay_offline()
    run_dir = Path(config.out)
    check_before_loading(config, store)
    if not resume and list_checkpoints(run_dir):
        raise UserError("this run dir already has checkpoints: continue it with --resume, or set another 'out'",
                        path=run_dir)
    if resume and not list_checkpoints(run_dir):  # killed before its first checkpoint: nothing to lose
        if os.environ.get("RANK", "0") == "0":
            print(f"--resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
        resume = False

    # --- processes: one, or one per device under `accelerate launch` / torchrun (data-parallel, DDP). Only the main
    # process writes (run dir, store) and evaluates; the others wait for it, for longer than NCCL's 10 min default.
    # It also holds report_to's trackers (the main process's alone log); TensorBoard writes into OUT/logs/NAME ---
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))],
                              log_with=config.report_to or None, project_dir=run_dir / "logs")
    is_main = accelerator.is_main_process

    # --- model and adapter (seeded before LoRA init, so the same config gives the same run) ---
    seed_everything(config.seed)
    # each process loads onto its own device (a 4-bit model cannot be moved after loading)
    model, tokenizer = load_model(config.base_model, dtype=config.dtype, quant=config.quant,
                                  device=str(accelerator.device))
    check_lora_targets(config, model)
    targets = config.lora.target_modules
    if targets == "all-linear" and config.lora.layers is not None:  # PEFT takes layers only with module names
        targets = linear_layer_names(model)
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=targets, layers_to_transform=config.lora.layers, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    use_fast_lora_dropout(model)
    use_lean_lora_forward(model)
    use_training_attention(model)
    if autocast_bf16(config):
        # LoRA weights stay fp32 (AdamW's updates are too small for bf16), but PEFT would cast each LoRA input up to
        # fp32 as well: an fp32 copy of every activation kept for backward, and slow fp32 matmuls. Under autocast
        # the LoRA matmuls then run in bf16 like the rest.
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()

    # --- data ---
    fields, task = config.data.fields or None, data_task(config)
    train_examples = load_examples(config.data.train, config.data.format, tokenizer, config.max_length, fields, task)
    val_examples = (load_examples(config.data.val, config.data.format, tokenizer, config.max_length, fields, task)
                    if config.data.val else [])
    batches_per_epoch = math.ceil(len(train_examples) / config.batch_size)
    total_steps = config.max_steps or math.ceil(config.epochs * batches_per_epoch / config.grad_accum)

    # --- optimizer, schedule, DDP (bf16 autocast where the hardware computes it natively) ---
    # autocast by hand, not Accelerator(mixed_precision=...): its state is per process, and the Python API may
    # train several runs with different dtypes in one process
    use_bf16 = autocast_bf16(config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(config, total_steps))
    with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=use_bf16):  # as it will run
        loss_fn = CompletionLoss(model)
    loss_fn, optimizer = accelerator.prepare(loss_fn, optimizer)
    plain_loss_fn = accelerator.unwrap_model(loss_fn)  # to evaluate on one process: a DDP forward waits for all
    evaluate_step = on_main(accelerator, lambda: make_evaluator(config, model, tokenizer, plain_loss_fn, val_examples,
                                                                run_dir, store, use_bf16), share=False)

    # --- state: fresh, or from the last checkpoint (best and patience are tracked by the main process) ---
    state = {"step": 0, "tokens_seen": 0, "best": None, "best_step": None, "evals_without_gain": 0}
    metrics_file = run_dir / "metrics.jsonl"
    if resume:
        checkpoint = list_checkpoints(run_dir)[-1]
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, accelerator.process_index)
    if is_main:
        # what a killed run left: temporaries of its atomic writes, and what it logged after its last checkpoint
        # (logged again from there; from step 0 when starting over)
        for folder in (run_dir, run_dir / "checkpoints"):
            remove_stale(folder)
        if resume:
            keep_metrics_until(metrics_file, state["step"])
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            metrics_file.write_text("")
        if config.eval:
            forget_curve_after(store, run_dir, state["step"] if resume else -1)
    # a resumed run logs the steps after its checkpoint again: TensorBoard hides what the killed run logged there
    accelerator.init_trackers(run_dir.name, config=flat_config(config.model_dump(mode="json")),
                              init_kwargs={"tensorboard": {"purge_step": state["step"] + 1}} if resume else None)
    if not resume and config.eval:  # step 0, before any update
        on_main(accelerator, lambda: evaluate_and_track(config, state, evaluate_step, metrics_file, model, run_dir,
                                                        accelerator))

    # --- the loop ---
    pad_id = tokenizer.pad_token_id
    progress = tqdm(total=total_steps, initial=state["step"], desc="training",
                    disable=not (show_progress and is_main))
    window_tokens, window_start = 0, time.time()
    train_seconds = 0.0
    stopped_early = False
    epoch_cache: dict[int, list] = {}
    while state["step"] < total_steps:
        step_start = time.time()
        loss_fn.train()
        step_batches = []
        for micro in range(config.grad_accum):
            position = state["step"] * config.grad_accum + micro  # where in the data stream: resumable
            epoch, index = divmod(position, batches_per_epoch)
            if epoch not in epoch_cache:
                epoch_cache = {epoch: epoch_batches(train_examples, config.batch_size, config.seed, epoch)}
            step_batches.append([train_examples[i] for i in epoch_cache[epoch][index]])
        step_examples = [example for batch in step_batches for example in batch]
        total_supervised = sum(label != IGNORE for example in step_examples for label in example["labels"][1:])
        step_tokens = sum(len(example["input_ids"]) for example in step_examples)
        # The step's batch is the same whatever the number of processes: each forwards every num_processes-th
        # example of it. DDP averages the processes' gradients, so each scales its part of the step's mean loss
        # (over all its supervised tokens) by num_processes; one with no example still joins, adding zero.
        shares = [batch[accelerator.process_index::accelerator.num_processes] for batch in step_batches]
        micro_batches = [collate(part, pad_id) for share in shares if share
                         for part in split_by_tokens(share, config.micro_batch_tokens)]
        weight = accelerator.num_processes
        if not micro_batches:
            micro_batches, weight = [collate(step_examples[:1], pad_id)], 0
        loss_sum = 0.0
        for i, batch in enumerate(micro_batches):
            # gradients are summed across processes at the step's last backward only
            with accelerator.no_sync(loss_fn) if i < len(micro_batches) - 1 else contextlib.nullcontext():
                with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    summed, _ = loss_fn(**batch)
                accelerator.backward(summed / total_supervised * weight)
            loss_sum += float(summed.detach()) if weight else 0.0
        loss_sum = float(accelerator.reduce(torch.tensor(loss_sum, dtype=torch.float64, device=accelerator.device),
                                            "sum"))
        state["tokens_seen"] += step_tokens
        window_tokens += step_tokens
        train_loss = loss_sum / max(total_supervised, 1)
        # Nothing is saved, evaluated or logged after a non-finite loss, gradient or update: a finite loss can
        # still back-propagate to an inf gradient, and clipping that makes every weight NaN. The three values are
        # the same on every process: all of them stop here.
        if not math.isfinite(train_loss):
            raise diverged(f"the training loss became {train_loss}", state["step"] + 1, run_dir)
        grad_norm = float(accelerator.clip_grad_norm_(params, config.max_grad_norm))
        if not math.isfinite(grad_norm):
            raise diverged(f"the gradient norm became {grad_norm}", state["step"] + 1, run_dir)
        optimizer.step()
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):  # one device sync per step
            raise diverged("the adapter weights became NaN/inf", state["step"] + 1, run_dir)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        if state["step"] % FREED_MEMORY_EVERY == 0:
            return_freed_memory()
        train_seconds += time.time() - step_start

        tokens_per_second = window_tokens / max(time.time() - window_start, 1e-9)
        if is_main:
            log(metrics_file, {"kind": "train", "step": state["step"], "tokens_seen": state["tokens_seen"],
                               "train_loss": train_loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm},
                accelerator, tokens_per_second=tokens_per_second)
        progress.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tokens_per_second:.0f}")
        progress.update(1)

        last_step = state["step"] == total_steps
        if config.eval and (state["step"] % config.eval.every == 0 or last_step):
            stopped_early = on_main(accelerator, lambda: evaluate_and_track(config, state, evaluate_step,
                                                                            metrics_file, model, run_dir,
                                                                            accelerator))
            window_tokens, window_start = 0, time.time()  # tokens/s of training, not of evaluation
        checkpoint_every = config.checkpoint.every or (config.eval.every if config.eval else None)
        if checkpoint_every and (state["step"] % checkpoint_every == 0 or last_step or stopped_early):
            rng_states = gather_object([rng_state()])  # every process's (LoRA dropout): an exact resume
            if is_main:
                save_checkpoint(run_dir, state["step"], model, optimizer, scheduler, state, rng_states)
                prune_checkpoints(run_dir, config.checkpoint.keep, state["best_step"])
        if stopped_early:
            break
    progress.close()

    # --- the run dir: final and best adapters (PEFT dirs), manifest ---
    def finish() -> dict:
        save_adapter(model, run_dir / "adapter")
        if state["best_step"] is None:
            copy_adapter(run_dir / "adapter", run_dir / "best")
        return write_manifest(config, run_dir, state, started, train_seconds, stopped_early, total_steps,
                              accelerator.num_processes)

    manifest = on_main(accelerator, finish)
    finish_trackers(accelerator)
    return manifest


def diverged(what: str, step: int, run_dir: Path) -> UserError:
    last = list_checkpoints(run_dir)
    return UserError(f"{what} at step {step}; stopped without saving. Last good checkpoint: "
                     f"{last[-1] if last else 'none'} (try a lower lr)")


def check_before_loading(config: TrainConfig, store) -> None:
    """Everything a run can be refused for without the model, checked before it loads and before anything is
    written: the destinations, the data, the evaluation suite and the early-stopping metric its evaluations must
    measure (found only after the step-0 evaluation otherwise, leaving files and a store row behind)."""
    from adapterbench import paths
    from adapterbench.config import config_error, load_suite
    from adapterbench.harness import database
    from adapterbench.tasks.compile import build_suite, metric_names, task_pairs

    from adapterbench.adapters.models import resolve_model

    paths.output_dir(config.out, field="out")
    for i, name in enumerate(config.report_to):
        if problem := tracker_problem(name):
            raise config_error(config, ("report_to", i), problem)
    if config.eval:
        database.check_store(store)
    task = data_task(config)
    for path in (config.data.train, config.data.val):
        if path is not None and task:
            task_pairs(task, path)  # read and rendered as the task asks
        elif path is not None:
            read_records(path, config.data.format, fields=config.data.fields or None)
    measured = ["val_loss"] if config.eval and config.data.val else []
    if config.eval and config.eval.suite:
        suite = load_suite(config.eval.suite)
        names = [task.name for task in suite.tasks]
        unknown = sorted(set(config.eval.tasks or ()) - set(names))
        if unknown:
            raise config_error(config, ("eval", "tasks"), f"{unknown} not in the suite, whose tasks are {names}")
        with scratch_dir("adapterbench-check") as tmp:  # a killed run's scratch is removed by the next
            build_suite(suite, Path(tmp) / "tasks")  # its data files read and checked
        measured += [f"{task.name}/{metric}" for task in suite.tasks
                     if not config.eval.tasks or task.name in config.eval.tasks for metric in metric_names(task)]
    rule = config.early_stopping
    if rule and rule.metric not in measured:
        known = f"its evaluations measure: {', '.join(measured)}" if measured else \
            "this run has no evaluation measuring anything (set eval, and data.val or eval.suite)"
        raise config_error(config, ("early_stopping", "metric"), f"{rule.metric!r} is never measured; {known}")
    resolve_model(config.base_model)  # last: a GGUF base is converted here (once), as loading would


def data_task(config: TrainConfig):
    """The suite task whose questions format: task trains on (None for the other formats)."""
    from adapterbench.config import config_error, load_suite

    if config.data.format != "task":
        return None
    tasks = load_suite(config.data.suite).tasks
    task = next((t for t in tasks if t.name == config.data.task), None)
    if task is None:
        raise config_error(config, ("data", "task"), f"{config.data.task!r} is not a task of {config.data.suite}, "
                           f"whose tasks are {[t.name for t in tasks]}")
    return task


def check_lora_targets(config: TrainConfig, model) -> None:
    """target_modules and layers must name parts of this base: PEFT raises a ValueError deep inside for a module
    name that matches nothing, and silently ignores layer indexes beyond the model's depth."""
    from adapterbench.config import config_error

    if isinstance(config.lora.target_modules, list):
        missing = [t for t in config.lora.target_modules
                   if not any(name == t or name.endswith("." + t) for name, _ in model.named_modules())]
        if missing:
            raise config_error(config, ("lora", "target_modules"), f"{missing} match no module of this base; its "
                               f"linear layers are: {', '.join(linear_layer_names(model))}")
    depth = getattr(model.config, "num_hidden_layers", None)
    outside = [i for i in config.lora.layers or () if depth is not None and not 0 <= i < depth]
    if outside:
        raise config_error(config, ("lora", "layers"), f"layers {outside} do not exist: this base has {depth} "
                           f"layers, numbered 0-{depth - 1}")


def linear_layer_names(model) -> list[str]:
    """What PEFT's all-linear targets, by name: every linear layer of the body (GPT-2's Conv1D and 4-bit ones
    too), not the LM head."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head})


def on_main(accelerator, fn, share: bool = True):
    """fn() on the main process alone (it alone writes the run dir and the store and evaluates) while the others
    wait. Its UserError is raised on every process, so they stop together; its result goes to all of them (share,
    and then it must pickle), or to the main process only."""
    if accelerator.num_processes == 1:
        return fn()
    from accelerate.utils import broadcast_object_list

    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except UserError as caught:
            error = caught
    shared, error = broadcast_object_list([result if share else None, error])
    if error is not None:
        raise error
    return shared if share else result


def evaluate_and_track(config: TrainConfig, state: dict, evaluate_step, metrics_file: Path, model, run_dir: Path,
                       accelerator) -> bool:
    """One evaluation (make_evaluator's), logged, and the best adapter kept; True when early stopping's patience has
    run out."""
    metrics = evaluate_step(state)
    log(metrics_file, metrics, accelerator)
    return update_best(config, state, metrics, model, run_dir)


def split_by_tokens(batch: list[dict], budget: int) -> list[list[dict]]:
    """Forward a batch in parts of at most `budget` padded tokens: activations, not the batch size, set the memory
    peak, and the step's gradient is the same (losses are summed, then divided by the step's supervised tokens)."""
    parts, part = [], []
    for example in sorted(batch, key=lambda e: -len(e["input_ids"])):
        width = len(part[0]["input_ids"]) if part else len(example["input_ids"])
        if part and (len(part) + 1) * width > budget:
            parts.append(part)
            part = []
        part.append(example)
    return parts + [part]


def autocast_bf16(config: TrainConfig) -> bool:
    from adapterbench.adapters.models import resolve_dtype

    return resolve_dtype(config.dtype) == torch.bfloat16


def return_freed_memory() -> None:
    """Hand the memory a step freed back to the OS. glibc keeps freed activation memory in its heap, where batches
    of other shapes fragment it, so without this the RSS grows step after step (bench/RESULTS.md: the training
    benchmark's peak RSS 15 % lower). Elsewhere than glibc there is nothing to call."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # macOS and musl have no malloc_trim; Windows no CDLL(None)
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(config: TrainConfig, params):
    if config.optimizer == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_schedule(config: TrainConfig, total_steps: int):
    """Multiplier of the base lr at each step: linear warmup, then constant, cosine or linear decay to 0."""
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if config.scheduler == "cosine" else max(0.0, 1 - progress)

    return factor


def make_evaluator(config: TrainConfig, model, tokenizer, loss_fn, val_examples, run_dir: Path, store,
                   autocast_bf16: bool):
    """evaluate_step(state) -> {"kind": "eval", step, tokens_seen, val_loss, "TASK/METRIC": value...}: validation loss
    and the suite's tasks through the harness, the same numbers `adapterbench eval` gives. RNG is saved and
    restored around it, so evaluating never changes the training that follows."""
    from adapterbench.harness.evaluate import GENERATION_BATCH, load_tasks, quiet_libraries, score

    suite_tasks, lm = None, None
    if config.eval and config.eval.suite:
        from adapterbench.config import load_suite
        from adapterbench.harness.lm import AdapterLM

        quiet_libraries()
        # kept in the run dir: the exact lm-eval tasks this run was evaluated on
        suite_tasks = load_tasks(load_suite(config.eval.suite), run_dir / "eval_tasks", config.eval.tasks)
        # eval's batch size: generation batches alike, so `adapterbench eval` gives these numbers
        lm = AdapterLM(model, tokenizer, batch_size=GENERATION_BATCH, bf16_autocast=autocast_bf16)

    def evaluate_step(state: dict) -> dict:
        saved_rng = rng_state()
        loss_fn.eval()
        metrics = {"kind": "eval", "step": state["step"], "tokens_seen": state["tokens_seen"]}
        if val_examples:
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                metrics["val_loss"] = validation_loss(loss_fn, val_examples, config.batch_size,
                                                      tokenizer.pad_token_id)
        result = None
        if suite_tasks:
            result = score(lm, suite_tasks, ADAPTER_NAME, limit=config.eval.limit)
            metrics.update({f"{r['task']}/{r['metric']}": r["value"] for r in result["scores"]})
        save_curve_point(config, run_dir, store, state, metrics, result)
        loss_fn.train()
        set_rng_state(saved_rng)
        return metrics

    return evaluate_step


def validation_loss(loss_fn, examples: list[dict], batch_size: int, pad_id: int) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            summed, supervised = loss_fn(**collate(examples[start:start + batch_size], pad_id))
            total, count = total + float(summed), count + int(supervised)
    return total / max(count, 1)


def save_curve_point(config: TrainConfig, run_dir: Path, store, state: dict, metrics: dict, result) -> None:
    """One evaluation of the run into the store (kind 'train_step'), so reports can overlay learning curves."""
    from adapterbench.harness import database

    label = run_dir.name  # score() labelled its rows with PEFT's adapter name
    scores = [{**row, "label": label} for row in (result["scores"] if result else [])]
    if "val_loss" in metrics:
        scores.append(Score(label=label, task="val", metric="loss", value=metrics["val_loss"], stderr=None, n=None))
    samples = [{**row, "label": label} for row in (result["samples"] if result else [])]
    evaluation = Evaluation(
        id=database.new_evaluation_id(), kind="train_step", train_run=str(run_dir.resolve()), step=state["step"],
        tokens_seen=state["tokens_seen"],
        suite=SuiteRef(name=config.eval.suite.stem if config.eval.suite else "val",
                       path=str(config.eval.suite) if config.eval.suite else None),
        base_ref=config.base_model, command="adapterbench train", environment={},
        config=config.model_dump(mode="json"),
        models=[ModelEntry(label=label, role="adapter", path=str(run_dir.resolve()), sha256=None,
                           base_name=config.base_model, manifest=None,
                           lm_eval=result["lm_eval"] if result else None)],
        scores=scores, samples=samples)
    with database.connect(store) as conn:
        database.save_evaluation(conn, evaluation)


def update_best(config: TrainConfig, state: dict, metrics: dict, model, run_dir: Path) -> bool:
    """Track the best evaluation (early-stopping metric, else val_loss), save it to best/; True when patience
    has run out."""
    rule = config.early_stopping
    metric = rule.metric if rule else "val_loss"
    mode = rule.mode if rule else "min"
    if metric not in metrics:
        if rule:
            known = [k for k in metrics if k not in ("kind", "step", "tokens_seen")]
            raise UserError(f"early_stopping.metric {metric!r} is not measured; measured: {known}",
                            field="early_stopping.metric")
        return False
    value = metrics[metric]
    min_delta = rule.min_delta if rule else 0.0
    improved = math.isfinite(value) and (state["best"] is None or (value < state["best"] - min_delta if mode == "min"
                                                                   else value > state["best"] + min_delta))
    if improved:
        state.update(best=value, best_step=state["step"], evals_without_gain=0)
        save_adapter(model, run_dir / "best")
        return False
    state["evals_without_gain"] += 1
    return bool(rule) and state["evals_without_gain"] >= rule.patience


def save_adapter(model, target: Path) -> None:
    """A standard PEFT dir, written whole or not at all."""
    with atomic_dir(target) as tmp:
        save_peft_dir(model, tmp)


def forget_curve_after(store, run_dir: Path, step: int) -> None:
    """Drop this run's curve points after `step` from the store (a resumed run evaluates those steps again)."""
    from adapterbench.harness import database

    with database.connect(store) as conn:
        database.forget_train_steps(conn, str(run_dir.resolve()), after_step=step)


def log(path: Path, record: dict, accelerator, **tracked_only) -> None:
    """A line of metrics.jsonl, and its values to report_to's trackers at its step, with `tracked_only` (tokens/s:
    a rerun would not repeat it, and metrics.jsonl is the same for the same config)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    accelerator.log({key: value for key, value in {**record, **tracked_only}.items()
                     if key not in ("kind", "step", "tokens_seen")}, step=record["step"])


def keep_metrics_until(path: Path, step: int) -> None:
    """On resume, drop what the interrupted run logged after its last checkpoint: it will be logged again."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines))


def write_manifest(config: TrainConfig, run_dir: Path, state: dict, started: float, train_seconds: float,
                   stopped_early: bool, total_steps: int, processes: int = 1) -> dict:
    from adapterbench.adapters.models import resolve_model

    base_path = resolve_model(config.base_model)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    evals = [r for r in logged if r["kind"] == "eval"]
    trains = [r for r in logged if r["kind"] == "train"]
    data_files = {name: str(path) for name, path in (("train", config.data.train), ("val", config.data.val)) if path}
    manifest = {
        "base": {"ref": config.base_model, "path": str(base_path), "sha256": base_sha(base_path)},
        "data": {name: {"path": path, "sha256": file_sha256(path)} for name, path in data_files.items()},
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "environment": environment(),
        "git_commit": git_commit(),
        "stats": {"wall_seconds": round(time.time() - started, 2), "train_seconds": round(train_seconds, 2),
                  "steps": state["step"], "planned_steps": total_steps, "tokens_seen": state["tokens_seen"],
                  "tokens_per_second": round(state["tokens_seen"] / max(train_seconds, 1e-9), 1),
                  "peak_rss_mb": round(rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), 1),
                  **peak_gpu_memory(), "stopped_early": stopped_early, "processes": processes},
        "best": {"step": state["best_step"], "value": state["best"],
                 "metric": config.early_stopping.metric if config.early_stopping else "val_loss"},
        "final_metrics": {**({"train_loss": trains[-1]["train_loss"]} if trains else {}),
                          **({k: v for k, v in evals[-1].items() if k != "kind"} if evals else {})},
    }
    write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))
    return manifest


def peak_gpu_memory() -> dict:
    """This process's peak CUDA memory in MiB, the loaded model included (what a QLoRA memory figure counts):
    allocated by tensors, and reserved by PyTorch's caching allocator (what nvidia-smi sees); {} without CUDA.
    Under several processes the manifest carries the main process's, each process holding one device."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_gpu_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}


def rss_mb(max_rss: int, platform: str = sys.platform) -> float:
    """getrusage's ru_maxrss in MB (MiB): macOS gives it in bytes, Linux and the BSDs in kilobytes."""
    return max_rss / (1024 * 1024 if platform == "darwin" else 1024)
