"""exact_match: a short answer (a number, a name, a code) is right when it equals the reference after
normalisation; lm-eval's own exact_match metric scores it, so the normalisation is lm-eval's."""

from __future__ import annotations

import re
from dataclasses import replace

from pydantic import field_validator

from adapterbench.task_types import generation
from adapterbench.task_types.spec import GenerateOptions, Metric, TaskType

# Answers and references are compared without the whitespace around them (generations often end in a newline):
# removed before the task's own patterns, so that "^the answer is" meets the answer's first word, and after them.
SURROUNDING_WHITESPACE = r"^\s+|\s+$"


class Options(GenerateOptions):
    """The suite keys of an exact-match task: how answers are normalised before they are compared."""

    ignore_case: bool = True
    ignore_punctuation: bool = False
    # regular expressions removed from answer and reference before comparing (e.g. "^the answer is:? *"); they
    # ignore case too when ignore_case does
    ignore_patterns: list[str] = []

    @field_validator("ignore_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"ignore_patterns: {pattern!r} is not a regular expression ({err})") from None
        return patterns


EXACT_MATCH = Metric("exact_match", binary=True)


def task_metrics(task) -> list[Metric]:
    # lm-eval removes the patterns first, in order, then lowercases: a pattern ignores case only if it says so
    patterns = [f"(?i){p}" if task.ignore_case else p for p in task.ignore_patterns]
    kwargs = (("ignore_case", task.ignore_case), ("ignore_punctuation", task.ignore_punctuation),
              ("regexes_to_ignore", [SURROUNDING_WHITESPACE, *patterns, SURROUNDING_WHITESPACE]))
    return [replace(EXACT_MATCH, lm_eval_kwargs=kwargs)]


TYPE = TaskType(
    name="exact_match", summary="short answers equal to the reference after normalisation: exact_match",
    data_kind="instruction", prompt=generation.prompt, doc=generation.doc, options=(Options,),
    reads_chat=True, metrics=(EXACT_MATCH,), task_metrics=task_metrics,
    primary=("exact_match",), item_score="exact_match")
