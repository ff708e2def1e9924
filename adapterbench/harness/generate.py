"""generate(): answer a prompts file with the base and each adapter (the eval's greedy decoding, chat template) and
keep the answers side by side in the store as an evaluation of kind 'generate', where reports show them."""

from __future__ import annotations

import csv
import datetime
import io
import sys
from pathlib import Path

from adapterbench.datafiles import reading
from adapterbench.digest import text_sha256
from adapterbench.errors import UserError
from adapterbench.provenance import environment
from adapterbench.record_types import Evaluation, Sample, SuiteRef

PROMPT_COLUMNS = ("prompt", "instruction")
REFERENCE_COLUMNS = ("reference", "output")


def read_prompts(path: str | Path) -> list[dict]:
    """[{id, prompt, reference}] from a .txt (one prompt per non-empty line) or a .jsonl/.csv with a `prompt` (or
    `instruction`, plus `input`) column and optionally `reference` (or `output`) and `id`."""
    path = Path(path)
    if path.suffix.lower() not in (".txt", ".md", ".jsonl", ".csv"):
        raise UserError(f"file type {path.suffix or '(none)'!r} is not supported (expected .txt, .jsonl or .csv)",
                        path=path)
    text = reading.read_text(path)  # UTF-8 (or refused in one line), a regular file, no NUL byte
    if path.suffix.lower() in (".txt", ".md"):
        rows = [(n, {"prompt": line.strip()}) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    elif path.suffix.lower() == ".jsonl":
        rows = reading.jsonl_objects(path)
    else:
        try:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2)]
        except csv.Error as err:
            raise UserError(f"unreadable CSV: {err}", path=path) from None
    prompts = []
    for n, row in rows:
        where = {"path": path, "line": n}
        values = {key: reading.text_value(row.get(key), key, where, integers=key == "id")
                  for key in ("id", "input", *PROMPT_COLUMNS, *REFERENCE_COLUMNS)}
        column = next((c for c in PROMPT_COLUMNS if values[c]), None)
        if column is None:
            raise UserError("no prompt (expected a non-empty 'prompt' or 'instruction')", field="prompt", **where)
        prompt = values[column]
        if column == "instruction" and values["input"]:
            prompt += "\n\n" + values["input"]
        reference = next((str(row[c]) for c in REFERENCE_COLUMNS if values[c]), None)
        prompts.append({"id": values["id"] or f"{path.stem}-{len(prompts) + 1}", "prompt": prompt,
                        "reference": reference})
    if not prompts:
        raise UserError("no prompts in the file", path=path)
    return prompts


def answer(lm, label: str, prompts: list[str], *, max_new_tokens: int = 128, system_prompt: str | None = None,
           chat_template: bool = True, progress: bool = True) -> list[str]:
    """Greedy answers of model `label` through lm-eval's generate_until, the path evaluations take."""
    from lm_eval.api.instance import Instance

    use_chat = chat_template and bool(getattr(lm.tokenizer, "chat_template", None))
    contexts = []
    for prompt in prompts:
        if use_chat:
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
            contexts.append(lm.apply_chat_template(messages + [{"role": "user", "content": prompt}]))
        else:
            contexts.append((system_prompt + "\n\n" if system_prompt else "") + prompt)
    until = [] if use_chat else ["\n\n"]
    requests = [Instance(request_type="generate_until", doc={}, idx=0,
                         arguments=(context, {"until": until, "max_gen_toks": max_new_tokens, "do_sample": False}))
                for context in contexts]
    with lm.use(label):
        return [text.strip() for text in lm.generate_until(requests, disable_tqdm=not progress)]


def generate(prompts_file: str | Path, *, base: str = "default", adapters=None, max_new_tokens: int = 128,
             system_prompt: str | None = None, chat_template: bool = True, dtype: str = "auto", quant: str = "auto",
             store: str | Path | None = None, save: bool = True, command: str | None = None,
             progress: bool = True, allow_base_mismatch: bool = False, allow_noop_adapter: bool = False
             ) -> Evaluation:
    """Answer every prompt with the base and each adapter. Returns the evaluation (kind 'generate'; one sample per
    prompt and model, no scores); with save=True it goes into the store."""
    from adapterbench.adapters.models import stay_offline
    from adapterbench.harness import database
    from adapterbench.harness.evaluate import (base_mismatches, check_base, load_session, model_entry,
                                               parse_adapters, quiet_libraries)

    stay_offline()
    quiet_libraries()
    prompts_file = Path(prompts_file)
    prompts = read_prompts(prompts_file)
    adapters = parse_adapters(adapters) if not isinstance(adapters, dict) else adapters
    if save:
        database.check_store(store)  # before the model loads: a store that cannot take the answers is refused
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens {max_new_tokens} is not valid (expected a positive number of tokens)",
                        field="--max-new-tokens")
    check_base(base, dtype, quant)
    lm, identities = load_session(base, adapters, dtype=dtype, quant=quant, allow_base_mismatch=allow_base_mismatch,
                                  allow_noop_adapter=allow_noop_adapter)
    task = prompts_file.stem
    evaluation = Evaluation(
        id=database.new_evaluation_id(), kind="generate",
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        suite=SuiteRef(name=task, path=str(prompts_file.resolve())), base_ref=base,
        command=command or " ".join(sys.argv),
        config={"max_new_tokens": max_new_tokens, "system_prompt": system_prompt, "chat_template": chat_template,
                "dtype": dtype, "quant": lm.quant, "model_dtype": str(lm.model.dtype).removeprefix("torch."),
                "base_mismatch": base_mismatches(identities)},
        environment=environment(), models=[], scores=[], samples=[])
    for label, identity in identities.items():
        answers = answer(lm, label, [p["prompt"] for p in prompts], max_new_tokens=max_new_tokens,
                         system_prompt=system_prompt, chat_template=chat_template, progress=progress)
        evaluation["models"].append(model_entry(label, identity))
        evaluation["samples"] += [
            Sample(label=label, task=task, doc_id=p["id"], prompt=p["prompt"], prediction=text,
                   reference=p["reference"], metrics={}, doc_hash=text_sha256(p["prompt"], 16))
            for p, text in zip(prompts, answers)]
    if save:
        with database.connect(store) as conn:
            database.save_evaluation(conn, evaluation)
    return evaluation
