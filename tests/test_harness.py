"""The harness's numbers: equal to lm-eval's own HFLM on the generated YAML, the same for an adapter alone or among
four, BLEU/ROUGE equal to sacrebleu/rouge-score, and adapters that do not fit the base are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adapterbench.config import load_suite
from adapterbench.errors import UserError
from adapterbench.harness.evaluate import evaluate, parse_adapters, results_table
from adapterbench.harness.prepack import onednn_bf16

from tiny_models import SAMPLE, every_type_suite

LIMIT = 6
SUITE = every_type_suite("every_type", mc_gen_tokens=8, qa_tokens=12, extra={
    "qa": {"chat_template": False},
    "topics_gen": {"num_fewshot": 2, "fewshot_data": f"{SAMPLE}/topics_train.jsonl"},
    "topics_ll": {"system_prompt": "Classify the sentence by its topic."}})


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(SUITE)
    return path


def random_lora(base_dir: Path, out: Path, seed: int, r: int = 4, target_modules="all-linear") -> Path:
    """A LoRA adapter with random (non-zero) B, so it really changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=target_modules, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {f"a{i}": random_lora(tiny_model_dir, root / f"a{i}", seed=i) for i in range(4)}


def reference_run(model_dir: Path, suite_file: Path, task_dir: Path, names: list[str], chat: bool) -> dict:
    """lm-eval's own HFLM on our generated YAML: what `lm_eval --include_path` would print."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite

    build_suite(load_suite(suite_file), task_dir)
    return simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=names,
                           task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
                           limit=LIMIT, batch_size=32, device="cpu", apply_chat_template=chat, log_samples=True,
                           bootstrap_iters=0)


def close(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-6 * max(abs(a), abs(b)))


def test_every_task_type_matches_lm_eval_hflm_in_float32(tiny_model_dir, suite_file, tmp_path):
    ours = evaluate(suite_file, base=str(tiny_model_dir), limit=LIMIT, dtype="fp32", save=False)
    ours_table = results_table(ours)["base"]
    predictions = {(s["task"], s["doc_id"]): s["prediction"] for s in ours["samples"]}
    suite = load_suite(suite_file)
    for chat in (True, False):
        names = [t.name for t in suite.tasks if t.chat_template == chat]
        reference = reference_run(tiny_model_dir, suite_file, tmp_path / f"tasks-{chat}", names, chat)
        for task in names:
            metrics = {k.split(",")[0]: v for k, v in reference["results"][task].items()
                       if "," in k and "_stderr" not in k}
            assert metrics.keys() == ours_table[task].keys(), task
            for metric, value in metrics.items():
                assert close(ours_table[task][metric], value), (task, metric, ours_table[task][metric], value)
            for sample in reference["samples"][task]:
                if isinstance(sample["filtered_resps"][0], str):  # a generation: the same greedy text
                    assert predictions[(task, sample["doc"]["id"])] == sample["filtered_resps"][0], (task, sample["doc"]["id"], len(sample["arguments"][0][0]) if isinstance(sample["arguments"][0], (list, tuple)) else sample["arguments"])


@pytest.mark.skipif(not onednn_bf16(), reason="no oneDNN bf16 matmuls on this CPU: weights are never packed here")
def test_packed_weights_change_no_bf16_score_or_answer(tiny_model_dir, suite_file, adapters,
                                                        with_and_without_packing):
    """bf16 on a CPU scores with its linear layers' weights packed for oneDNN; every score and every greedy answer
    of every task type, base and merged adapter alike, is the one the unpacked layers give."""
    def run():
        result = evaluate(suite_file, base=str(tiny_model_dir), adapters={"a0": str(adapters["a0"])}, limit=LIMIT,
                          dtype="bf16", save=False)
        return results_table(result), {(s["label"], s["task"], s["doc_id"]): s["prediction"] for s in result["samples"]}

    packed, plain = with_and_without_packing(run)
    assert packed == plain
    assert packed[0]["a0"] != packed[0]["base"]  # the adapter is really there


def test_adapter_among_four_scores_as_it_does_alone(tiny_model_dir, suite_file, adapters):
    tasks = ["mc", "ppl", "qa"]
    together = evaluate(suite_file, base=str(tiny_model_dir), adapters={k: str(v) for k, v in adapters.items()},
                        limit=LIMIT, dtype="fp32", tasks=tasks, save=False)
    alone = evaluate(suite_file, base=str(tiny_model_dir), adapters={"a2": str(adapters["a2"])}, limit=LIMIT,
                     dtype="fp32", tasks=tasks, save=False)
    table_together, table_alone = results_table(together), results_table(alone)
    for task, metrics in table_alone["a2"].items():
        for metric, value in metrics.items():
            assert close(table_together["a2"][task][metric], value), (task, metric)
    assert table_together["base"] == table_alone["base"]
    # the adapters really change the model, so the equality above is not the base compared with itself
    assert table_together["a2"]["ppl"]["word_perplexity"] != table_together["base"]["ppl"]["word_perplexity"]
    assert len({table_together[f"a{i}"]["ppl"]["word_perplexity"] for i in range(4)}) == 4


def test_bleu_and_rouge_equal_the_libraries_on_the_same_predictions(tiny_model_dir, suite_file, adapters):
    import sacrebleu
    from rouge_score import rouge_scorer

    evaluation = evaluate(suite_file, base=str(tiny_model_dir), adapters={"a0": str(adapters["a0"])},
                          limit=LIMIT, dtype="fp32", tasks=["qa"], save=False)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for label, tasks in results_table(evaluation).items():
        samples = [s for s in evaluation["samples"] if s["label"] == label]
        predictions, references = [s["prediction"].strip() for s in samples], [s["reference"] for s in samples]
        assert close(tasks["qa"]["bleu"], sacrebleu.corpus_bleu(predictions, [references]).score)
        direct = [scorer.score(r, p) for p, r in zip(predictions, references)]
        for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            for part, attr in (("precision", "precision"), ("recall", "recall"), ("f1", "fmeasure")):
                expected = sum(getattr(d[kind], attr) for d in direct) / len(direct)
                assert close(tasks["qa"][f"{kind}_{part}"], expected), (label, kind, part)


def test_adapter_for_another_base_is_refused(tiny_model_dir, suite_file, tmp_path):
    from conftest import build_tiny_model

    other_base = build_tiny_model(tmp_path / "other", hidden=32)
    adapter = random_lora(other_base, tmp_path / "foreign", seed=0)
    with pytest.raises(UserError, match=r"has shape \[4, 64\] but .model.layers.0.mlp.down_proj. of this base is 128->64"):
        evaluate(suite_file, base=str(tiny_model_dir), adapters={"foreign": str(adapter)}, limit=2, save=False)


def test_adapter_targeting_missing_layers_is_refused(tiny_model_dir, suite_file, tmp_path):
    adapter = random_lora(tiny_model_dir, tmp_path / "deep", seed=0, target_modules=["q_proj"])
    weights = adapter / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = {name.replace("layers.1.", "layers.7."): t for name, t in load_file(weights).items()}
    save_file(tensors, weights)
    with pytest.raises(UserError, match="targets 'model.layers.7.self_attn.q_proj', which this base does not have"):
        evaluate(suite_file, base=str(tiny_model_dir), adapters={"deep": str(adapter)}, limit=2, save=False)


def test_not_an_adapter_dir_is_a_user_error(tiny_model_dir, suite_file, tmp_path):
    with pytest.raises(UserError, match="not a PEFT adapter dir"):
        evaluate(suite_file, base=str(tiny_model_dir), adapters=[str(tmp_path)], save=False)


def test_adapter_labels_from_paths_and_pairs(tmp_path):
    assert parse_adapters(["runs/qa/adapter", "r8=runs/x/best", "runs/plain"]) == {
        "qa/adapter": "runs/qa/adapter", "r8": "runs/x/best", "plain": "runs/plain"}
    with pytest.raises(UserError, match="reserved"):
        parse_adapters(["base=x"])
    with pytest.raises(UserError, match="share the label"):
        parse_adapters(["a/adapter", "a/adapter"])


def test_eval_cli_prints_json_and_saves_to_the_store(tiny_model_dir, suite_file, adapters, tmp_path, capsys):
    from adapterbench.cli import main
    from adapterbench.harness import database

    db = tmp_path / "store.sqlite"
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(suite_file), "--base", str(tiny_model_dir), "--adapter", f"mine={adapters['a1']}",
              "--limit", "2", "--tasks", "mc,qa", "--dtype", "fp32", "--store", str(db), "--json",
              "--predictions-csv", str(tmp_path / "p.csv")])
    assert exit_.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["results"]) == {"base", "mine"}
    assert set(printed["results"]["mine"]) == {"mc", "qa"}
    with database.connect(db) as conn:
        saved = database.load_evaluation(conn, printed["eval_id"])
    assert len(saved["samples"]) == 2 * 2 * 2
    assert {m["label"]: m["role"] for m in saved["models"]} == {"base": "base", "mine": "adapter"}
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "task,id,input,reference,base,mine"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_merged_adapter_equals_peft_forward_and_base_is_restored_exactly(tiny_model_dir, adapters, dtype):
    import torch
    from peft import PeftModel

    from adapterbench.adapters.models import load_model
    from adapterbench.harness.lm import AdapterLM

    model, tokenizer = load_model(str(tiny_model_dir), dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapters["a0"]), adapter_name="a0")
    model.load_adapter(str(adapters["a1"]), adapter_name="a1")
    base_weights = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    ids = tokenizer("LoRA freezes the pretrained weights and learns a low-rank update.", return_tensors="pt").input_ids
    lm = AdapterLM(model, tokenizer)
    for label in ("a0", "a1", "base", "a0"):
        with torch.no_grad():
            if label == "base":
                with model.disable_adapter():
                    expected = model(ids).logits.float()
            else:
                model.set_adapter(label)
                expected = model(ids).logits.float()  # PEFT's own path: LoRA beside the frozen weights
            with lm.use(label):
                merged = model(ids).logits.float()
        if dtype == "fp32":  # in bf16 the merged weights are rounded once more, so only fp32 can be compared tightly
            assert torch.allclose(merged, expected, atol=1e-4, rtol=1e-4), label
        # switching back restores the base bit for bit, in bf16 too (no add-then-subtract drift)
        assert all(torch.equal(v, base_weights[k]) for k, v in model.state_dict().items() if k in base_weights)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_head_scores_in_small_slices_equal_one_cross_entropy_over_every_row(dtype):
    """The log-softmax runs a few rows at a time (cache-sized slices); every log-likelihood and greedy flag must be
    bit for bit what one fp32 cross-entropy and argmax over all the rows give, across uneven slice boundaries."""
    import torch
    import torch.nn.functional as F

    from adapterbench.harness.lm import CPU_SOFTMAX_ROWS, _head_scores

    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(24, 999, bias=False).to(getattr(torch, dtype))
    hidden = torch.randn(3 * CPU_SOFTMAX_ROWS + 5, 24, generator=generator).to(head.weight.dtype)
    logits = head(hidden).float()
    targets = torch.randint(0, 999, (len(hidden),), generator=generator)
    targets[::3] = logits.argmax(dim=-1)[::3]  # some targets are the argmax, so the greedy flags are not all False
    with torch.no_grad():
        token_ll, greedy = _head_scores(hidden, targets, head, rows=2 * CPU_SOFTMAX_ROWS + 3)
        unflagged = _head_scores(hidden, targets, head, need_greedy=False)[1]
    assert torch.equal(token_ll, -F.cross_entropy(logits, targets, reduction="none"))
    assert torch.equal(greedy, logits.argmax(dim=-1) == targets) and 0 < int(greedy.sum()) < len(greedy)
    assert not unflagged.any()


@pytest.mark.parametrize("opening", ["", "You answer questions about fine-tuning language models. Question: "])
def test_packed_prefill_generates_what_each_prompt_generates_alone(opening, tmp_path, monkeypatch):
    """Prompts of different lengths, batched: each must continue exactly as it does alone (fp32, greedy). With an
    opening they all share (a system prompt), the batch runs it once; alone, nothing is shared."""
    from conftest import build_tiny_model
    from lm_eval.api.instance import Instance

    import adapterbench.harness.lm as lm_module
    from adapterbench.adapters.models import load_model
    from adapterbench.harness.lm import SHARE_MIN_CONTEXT, AdapterLM

    shared_runs = []
    run_prefix = lm_module._prefix_keys_values
    monkeypatch.setattr(lm_module, "_prefix_keys_values",
                        lambda tokens, *a: shared_runs.append(len(tokens)) or run_prefix(tokens, *a))
    model, tokenizer = load_model(str(build_tiny_model(tmp_path / "sharp", init_std=0.3, seed=3)), dtype="fp32")
    lm = AdapterLM(model, tokenizer, batch_size=8)
    prompts = ["LoRA freezes", "Perplexity is the exponential of the mean negative log-likelihood per token.",
               "BLEU counts", "The answer is B.", "Quantization stores each weight in four bits; NF4 uses",
               "ROUGE measures recall of n-grams and longest common subsequences"]
    requests = [Instance("generate_until", {}, (opening + p, {"until": [], "max_gen_toks": 12, "do_sample": False}),
                         i) for i, p in enumerate(prompts)]
    batched = lm.generate_until(requests, disable_tqdm=True)
    assert (len(shared_runs) == 1 and shared_runs[0] >= SHARE_MIN_CONTEXT) if opening else not shared_runs
    lm.batch_size_per_gpu = 1
    alone = [lm.generate_until([r], disable_tqdm=True)[0] for r in requests]
    assert len(shared_runs) == bool(opening)  # a prompt alone shares nothing
    assert batched == alone
    assert len(set(alone)) == len(alone)  # the prompts really lead to different text


def test_group_by_column_reaches_each_sample_and_the_store(tiny_model_dir, tmp_path):
    from adapterbench.harness import database

    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": f"Paragraph {i} of the notes.",
                                         "chapter": "intro" if i < 2 else "lora"}) + "\n" for i in range(4)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: g\ntasks:\n  - {{name: ppl, type: perplexity, data: {notes}, group_by: chapter}}\n")
    evaluation = evaluate(suite, base=str(tiny_model_dir), dtype="fp32", store=tmp_path / "s.sqlite")
    assert {s["doc_id"]: s["group"] for s in evaluation["samples"]} == {"n0": "intro", "n1": "intro",
                                                                         "n2": "lora", "n3": "lora"}
    with database.connect(tmp_path / "s.sqlite") as conn:
        saved = database.load_evaluation(conn, evaluation["id"])
    assert [s["group"] for s in saved["samples"]] == [s["group"] for s in evaluation["samples"]]


def test_quant_auto_follows_the_adapters_training_manifests():
    from adapterbench.harness.evaluate import resolve_quant

    trained = {"nf4": {"manifest": {"config": {"quant": "nf4"}}}, "bf16": {"manifest": {"config": {"quant": "none"}}},
               "random": {"manifest": None}}
    assert resolve_quant("auto", {}) == "none"
    assert resolve_quant("auto", {"r": trained["random"]}) == "none"
    assert resolve_quant("auto", {"a": trained["nf4"], "r": trained["random"]}) == "nf4"
    assert resolve_quant("none", {"a": trained["nf4"]}) == "none"
    with pytest.raises(UserError, match=r"differently quantized bases \(a: nf4, b: none\).*--quant"):
        resolve_quant("auto", {"a": trained["nf4"], "b": trained["bf16"]})


def test_adapter_trained_on_nf4_is_scored_on_the_nf4_base_by_default(tiny_model_dir, suite_file, adapters, tmp_path):
    import shutil

    adapter = shutil.copytree(adapters["a2"], tmp_path / "run" / "adapter")
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"config": {"quant": "nf4"}}))
    evaluation = evaluate(suite_file, base=str(tiny_model_dir), adapters={"trained": str(adapter)}, limit=1,
                          tasks=["mc"], dtype="bf16", save=False)
    assert evaluation["config"]["quant"] == "nf4"
    plain = evaluate(suite_file, base=str(tiny_model_dir), adapters={"random": str(adapters["a2"])}, limit=1,
                     tasks=["mc"], dtype="bf16", save=False)
    assert plain["config"]["quant"] == "none"
