"""perplexity: how well the model predicts held-out text (lm-eval's loglikelihood_rolling: word and byte
perplexity, bits per byte)."""

from adapterbench.task_types.spec import Metric, TaskType


def doc(task, record: dict) -> dict:
    return {"id": record["id"], "text": record["text"]}


def prompt(task) -> dict:
    return {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "text"}


TYPE = TaskType(
    name="perplexity", summary="perplexity of held-out text: word/byte perplexity, bits per byte",
    data_kind="text", prompt=prompt, doc=doc,
    metrics=(Metric("word_perplexity", "perplexity", higher_is_better=False, lm_eval_aggregation="weighted_perplexity"),
             Metric("byte_perplexity", "perplexity", higher_is_better=False, lm_eval_aggregation="weighted_perplexity"),
             Metric("bits_per_byte", "bits_per_byte", higher_is_better=False)),
    primary=("word_perplexity",), answers=False)
