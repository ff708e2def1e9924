"""Every base architecture in the matrix scores exactly as lm-eval's own HFLM scores it (fp32, every task type,
identical greedy text), whether our fast paths take it or decline it."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path

import pytest

from tiny_models import ARCHITECTURES, DECLINED, SAMPLE, build_arch_model, every_type_suite

LIMIT = 4
# the generation task's system prompt is an opening its prompts share: prefill runs it once (lm.py _prefill_cache)
SUITE = every_type_suite("matrix", mc_gen_tokens=6, qa_tokens=8,
                         extra={"qa": {"system_prompt": "Answer in one short sentence about LoRA and evaluation."}})


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("matrix-suite") / "suite.yaml"
    path.write_text(SUITE)
    return path


def reference_run(model_dir: Path, suite_file: Path, task_dir: Path, peft: Path | None = None,
                  prebuilt: bool = False) -> dict:
    """lm-eval's own HFLM (`--model hf`, `peft=` for an adapter) on our generated YAML, with the chat template.
    `prebuilt`: HFLM built on the base, then given `PeftModel.from_pretrained` of it (PEFT's own forward under
    lm-eval's scoring), for adapters whose `peft=` loading lm-eval itself breaks (its tie_weights() after the wrap)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from adapterbench.config import load_suite
    from adapterbench.tasks.compile import build_suite

    suite = load_suite(suite_file)
    build_suite(suite, task_dir)
    model, args = "hf", f"pretrained={model_dir},dtype=float32" + (f",peft={peft}" if peft else "")
    if prebuilt:
        from lm_eval.models.huggingface import HFLM
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_pretrained(model_dir)
        model = HFLM(pretrained=base, tokenizer=AutoTokenizer.from_pretrained(model_dir), batch_size=8)
        model._model = PeftModel.from_pretrained(base, str(peft)).eval()
        args = ""
    return simple_evaluate(model=model, model_args=args, tasks=[t.name for t in suite.tasks],
                           task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
                           limit=LIMIT, batch_size=8, device="cpu", apply_chat_template=True, log_samples=True,
                           bootstrap_iters=0)


def assert_equal_to_reference(ours: dict, label: str, reference: dict) -> None:
    """Every metric within 1e-6 relative, perplexities on the log scale they are computed on (exp of a mean
    log-likelihood: a random tiny model's perplexity of 1e15 turns float rounding of a merged adapter into 3e-6
    relative); every generated answer identical."""
    from adapterbench.harness.evaluate import results_table

    table = results_table(ours)[label]
    predictions = {(s["task"], s["doc_id"]): s["prediction"] for s in ours["samples"] if s["label"] == label}
    for task, results in reference["results"].items():
        expected = {k.split(",")[0]: v for k, v in results.items() if "," in k and "_stderr" not in k}
        assert expected.keys() == table[task].keys(), task
        for metric, value in expected.items():
            mine = table[task][metric]
            if "perplexity" in metric:
                mine, value = math.log(mine), math.log(value)
            assert mine == pytest.approx(value, rel=1e-6, abs=1e-9), (task, metric, table[task][metric])
        for sample in reference["samples"][task]:
            if isinstance(sample["filtered_resps"][0], str):
                assert predictions[(task, sample["doc"]["id"])] == sample["filtered_resps"][0], (task, sample["doc_id"])


# their attention is not transformers' SDPA (Gemma-2 soft-caps in eager attention; Falcon has its own code), so
# packed rows are attended whole there, not segment by segment
WHOLE_ROW_ATTENTION = {"gemma2", "falcon"}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_base_scores_equal_lm_eval_hflm_on_every_task_type(architecture, suite_file, tmp_path, caplog, monkeypatch):
    import adapterbench.harness.lm as lm
    from adapterbench.harness.evaluate import evaluate

    plans, openings = [], []
    by_segment, shared_opening = lm.attention_by_segment, lm._shared_opening

    @contextmanager
    def recorded(*args, **kwargs):
        with by_segment(*args, **kwargs) as plan:
            yield plan
        plans.append(plan.used)

    monkeypatch.setattr(lm, "attention_by_segment", recorded)
    monkeypatch.setattr(lm, "_shared_opening", lambda tokens, min_prompts: openings.append(
        (min_prompts, shared_opening(tokens, min_prompts))) or openings[-1][1])
    model_dir = build_arch_model(architecture, tmp_path / architecture)
    with caplog.at_level(logging.WARNING, logger="adapterbench"):
        ours = evaluate(suite_file, base=str(model_dir), limit=LIMIT, dtype="fp32", save=False)
    declined = [r.getMessage() for r in caplog.records if "plain HFLM path" in r.getMessage()]
    # the architectures we claim fast take the fast paths; the others say once that they do not
    assert bool(declined) == (architecture in DECLINED), declined
    fast = architecture not in DECLINED and architecture not in WHOLE_ROW_ATTENTION
    assert bool(plans) == (architecture not in DECLINED) and (sum(plans) > 0) == fast, plans
    # generation's packed prefill ran the shared system prompt once (min_prompts=2 is the prefill's call)
    assert any(least == 2 and length > 0 for least, length in openings) == (architecture not in DECLINED), openings
    assert_equal_to_reference(ours, "base", reference_run(model_dir, suite_file, tmp_path / "tasks"))


TRAINED = [a for a in ARCHITECTURES if a != "mistral_window"]  # the same body as mistral


@pytest.mark.parametrize("quant", ["none", "nf4"])
@pytest.mark.parametrize("architecture", TRAINED)
def test_train_runs_on_every_architecture_with_all_linear_and_with_chosen_layers(architecture, quant, tmp_path):
    """Two steps on all linear layers, and two on the last layer only (lora.layers: the trainer names the linear
    layers of this architecture itself); the adapters load back and change the model."""
    from safetensors.torch import load_file

    from adapterbench.config import TrainConfig
    from adapterbench.training import train

    model_dir = build_arch_model(architecture, tmp_path / architecture, init_std=0.02)
    for name, layers in (("all", None), ("last", [1])):
        config = TrainConfig.model_validate({
            "base_model": str(model_dir), "quant": quant, "dtype": "fp32", "max_steps": 2, "batch_size": 2,
            "max_length": 64, "lr": 1e-2, "out": str(tmp_path / name),
            "data": {"format": "instruction", "train": str(SAMPLE / "qa_train.jsonl")},
            "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "layers": layers}})
        train(config, store=tmp_path / "s.sqlite", show_progress=False)
        tensors = load_file(tmp_path / name / "adapter" / "adapter_model.safetensors")
        assert any(t.abs().sum() > 0 for n, t in tensors.items() if "lora_B" in n), name
        touched = {int(part) for n in tensors for part in n.split(".") if part.isdigit()}
        assert touched == ({0, 1} if layers is None else {1}), (name, sorted(tensors)[:3])
