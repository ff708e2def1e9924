"""generation: the model answers an instruction (or the last turn of a conversation); the answer is scored against
the reference with corpus BLEU (sacrebleu) and ROUGE (rouge-score, in the task's language)."""

from __future__ import annotations

from adapterbench.task_types.spec import GenerateOptions, Metric, TaskType, hook_name

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_PARTS = ("precision", "recall", "f1")
ROUGE_KEYS = tuple(f"{kind}_{part}" for kind in ROUGE_TYPES for part in ROUGE_PARTS)
ITEM_MARGIN = 0.1  # an item counts as fixed/broken when its ROUGE-L F1 moves by at least this much


def is_english(language: str | None) -> bool:
    """English (en, en-GB, eng; also unset): the language rouge-score's own tokenizer and Porter stemmer are for."""
    return (language or "en").lower().replace("_", "-").split("-")[0] in ("en", "eng")


def doc(task, record: dict) -> dict:
    """An instruction record, or a conversation: the turns before its last assistant turn are the context (the
    ChatGeneration task renders them), that turn is the reference; `prompt` is the last user turn, for display."""
    if "messages" in record:
        turns = record["messages"]
        last = max(i for i, turn in enumerate(turns) if turn["role"] == "assistant")
        return {"id": record["id"], "messages": turns[:last], "prompt": turns[last - 1]["content"],
                "reference": turns[last]["content"]}
    return {"id": record["id"], "prompt": record["instruction"] + (f"\n\n{record['input']}" if record["input"] else ""),
            "reference": record["output"]}


def prompt(task) -> dict:
    return {"output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{reference}}"}


def process_results(task) -> str:
    # ROUGE outside English tokenizes by Unicode letters and digits: a hook of its own bound to the language
    return "process_generation" if is_english(task.language) else f"{hook_name(task.name)}_process_generation"


def utils(task) -> list[str]:
    if is_english(task.language):
        return []
    return [f"{hook_name(task.name)}_process_generation = partial(process_generation, language={task.language!r})"]


TYPE = TaskType(
    name="generation", summary="free answers against references: BLEU, ROUGE-1/2/L/Lsum",
    data_kind="instruction", prompt=prompt, doc=doc, options=(GenerateOptions,), reads_chat=True,
    metrics=(Metric("bleu", "bleu", lm_eval_aggregation="utils.bleu_corpus"),
             *(Metric(key, detail=not key.endswith("_f1")) for key in ROUGE_KEYS)),
    # ROUGE-L F1 rather than BLEU: domain answers are short and few, and corpus BLEU on them is mostly 4-gram
    # smoothing and brevity penalty (single digits that jump with one answer), while ROUGE-L F1 is a per-answer
    # score in [0, 1] whose mean moves with each answer's overlap
    primary=("rougeL_f1", "bleu"),
    process_results=process_results, utils=utils,
    detail="rouge", item_score="rougeL_f1", item_margin=ITEM_MARGIN)
