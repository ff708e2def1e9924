"""multiple_choice_generate: the model writes the letter of its choice, parsed from free text; an answer naming no
single choice counts as wrong and as unparseable."""

from adapterbench.task_types import multiple_choice
from adapterbench.task_types.spec import GenerateOptions, Metric, TaskType

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNPARSEABLE_RATE = Metric("unparseable_rate", higher_is_better=False, binary=True)


def prompt(task) -> dict:
    letters = "{% for c in choices %}" + f"{{{{ '{LETTERS}'[loop.index0] }}}}" + ". {{ c }}\n{% endfor %}"
    return {"output_type": "generate_until",
            "doc_to_text": "Question: {{question}}\n" + letters + "Answer with the letter of the correct choice.\n",
            "doc_to_target": f"{{{{ '{LETTERS}'[answer] }}}}"}


TYPE = TaskType(
    name="multiple_choice_generate", summary="generate a letter, parsed (with an unparseable class): acc",
    data_kind="multiple_choice", prompt=prompt, doc=multiple_choice.doc, options=(GenerateOptions,),
    metrics=(Metric("acc", binary=True), UNPARSEABLE_RATE), primary=("acc",),
    process_results=lambda task: "process_mc_generate", item_score="acc")
