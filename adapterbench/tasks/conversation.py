"""ChatGeneration: lm-eval's generation task over conversations, whose context is every turn before the last
assistant turn. The compiled YAML names it (`class: !function utils.ChatGeneration`), so `lm_eval --include_path`
runs it as well; imported only by lm-eval, since it needs lm-eval loaded."""

from __future__ import annotations

from lm_eval.api.task import ConfigurableTask
from lm_eval.api.utils import maybe_delimit

from adapterbench.tasks.compile import chat_context, plain_context


class ChatGeneration(ConfigurableTask):
    """lm-eval shows a task's doc_to_text as one user turn; an item of this task is a conversation's earlier turns
    (the doc's `messages`), shown as the turns they are, through the model's chat template when the evaluation
    applies one, else as lm-eval writes labeled examples in plain text. Scoring is the generation task's."""

    def __init__(self, config: dict | None = None, **kwargs):
        # lm-eval hands a `class:` task its whole YAML, the `class` key included, which its TaskConfig refuses
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"}, **kwargs)

    def fewshot_context(self, doc, num_fewshot, system_instruction=None, apply_chat_template=False,
                        fewshot_as_multiturn=False, chat_template=None, gen_prefix=None):
        # the system text as lm-eval's own fewshot_context joins it: a run's --system_instruction, then the task's
        system = maybe_delimit(system_instruction, self.config.description, self.config.fewshot_delimiter)
        turns = chat_context(doc["messages"], system or None)
        if apply_chat_template and chat_template:
            return chat_template(turns, add_generation_prompt=True)
        return plain_context(turns)
