"""multiple_choice: the choice with the highest log-likelihood after the question is the answer (lm-eval's acc and
acc_norm, the latter normalised by the choice's length in bytes)."""

from adapterbench.task_types.spec import Metric, TaskType


def doc(task, record: dict) -> dict:
    return {"id": record["id"], "question": record["question"], "choices": record["choices"],
            "answer": record["answer"]}


def prompt(task) -> dict:
    return {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_choice": "{{choices}}", "doc_to_target": "answer"}


TYPE = TaskType(
    name="multiple_choice", summary="pick the likeliest choice (log-likelihood): acc, acc_norm",
    data_kind="multiple_choice", prompt=prompt, doc=doc,
    metrics=(Metric("acc", binary=True), Metric("acc_norm", binary=True)),
    primary=("acc",), item_score="acc")
