"""Trying a model by hand: `generate` answers a prompts file side by side into the store, with the eval's decoding;
`chat` streams answers, switches adapters and forgets on /reset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adapterbench.cli import main
from adapterbench.errors import UserError
from adapterbench.harness import database
from adapterbench.harness.generate import read_prompts

from test_harness import random_lora


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(map(str, args)))
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return random_lora(tiny_model_dir, tmp_path_factory.mktemp("lora") / "style", seed=3)


def test_prompts_come_from_txt_jsonl_and_csv(tmp_path):
    (tmp_path / "p.txt").write_text("What is LoRA?\n\n  Define NF4.  \n")
    assert read_prompts(tmp_path / "p.txt") == [{"id": "p-1", "prompt": "What is LoRA?", "reference": None},
                                                {"id": "p-2", "prompt": "Define NF4.", "reference": None}]
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "x", "instruction": "Sum", "input": "2 and 3",
                                                  "output": "5"}) + "\n")
    assert read_prompts(tmp_path / "p.jsonl") == [{"id": "x", "prompt": "Sum\n\n2 and 3", "reference": "5"}]
    (tmp_path / "p.csv").write_text("prompt,reference\nHi,Hello\n")
    assert read_prompts(tmp_path / "p.csv") == [{"id": "p-1", "prompt": "Hi", "reference": "Hello"}]


def test_a_prompt_row_without_prompt_names_file_and_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "ok"}\n{"question": "no prompt column"}\n')
    with pytest.raises(UserError) as err:
        read_prompts(tmp_path / "p.jsonl")
    assert err.value.line == 2 and err.value.field == "prompt"


def test_generate_answers_side_by_side_into_the_store_like_the_eval_decodes(tiny_model_dir, adapter, tmp_path,
                                                                             capsys):
    from adapterbench.harness.evaluate import evaluate

    prompts = tmp_path / "prompts.jsonl"
    qa = [json.loads(line) for line in
          (Path(__file__).parents[1] / "adapterbench/sample/data/qa_test.jsonl").read_text().splitlines()[:3]]
    prompts.write_text("".join(json.dumps({"id": r["id"], "prompt": r["instruction"], "reference": r["output"]}) + "\n"
                               for r in qa))
    store = tmp_path / "s.sqlite"
    code, out, _ = run(capsys, "generate", "--prompts", prompts, "--base", tiny_model_dir, "--adapter",
                       f"style={adapter}", "--max-new-tokens", 12, "--dtype", "fp32", "--store", store,
                       "--predictions-csv", tmp_path / "answers.csv", "--json")
    assert code == 0
    printed = json.loads(out)
    with database.connect(store) as conn:
        saved = database.load_evaluation(conn, printed["eval_id"])
    assert saved["kind"] == "generate" and [m["label"] for m in saved["models"]] == ["base", "style"]
    assert len(saved["samples"]) == 6 and saved["scores"] == []
    rows = list(csv.DictReader(open(tmp_path / "answers.csv", encoding="utf-8")))
    assert [r["id"] for r in rows] == [r["id"] for r in qa] and set(rows[0]) >= {"base", "style"}

    # the same prompts through a generation task give the same greedy answers
    suite = tmp_path / "suite.yaml"
    qa_file = tmp_path / "qa.jsonl"
    qa_file.write_text("".join(json.dumps(r) + "\n" for r in qa))
    suite.write_text(f"name: s\ntasks:\n  - {{name: qa, type: generation, data: {qa_file}, max_new_tokens: 12}}\n")
    scored = evaluate(suite, base=str(tiny_model_dir), adapters={"style": str(adapter)}, dtype="fp32", save=False)
    by_eval = {(s["label"], s["doc_id"]): s["prediction"].strip() for s in scored["samples"]}
    assert {(s["label"], s["doc_id"]): s["prediction"] for s in saved["samples"]} == by_eval


def greedy_reply(model_dir: Path, adapter: Path | None, line: str, max_new_tokens: int) -> str:
    """transformers' own greedy answer to one chat turn, the adapter loaded by PEFT: what chat should stream."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": line}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        output = model.eval().generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


def chat_session(model_dir: Path, adapters: dict, lines: list[str], **options) -> tuple[list[str], list[str]]:
    """Runs run_chat on `lines`: (the prompts it showed, what it wrote after each line read, one entry per line)."""
    from adapterbench.chat import run_chat

    lines, prompts, written = iter(lines), [], []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        written.append("")
        return next(lines)

    def write(text: str) -> None:
        if written:
            written[-1] += text

    run_chat(str(model_dir), adapters, dtype="fp32", read=read, write=write, **options)
    return prompts, written


def test_chat_streams_switches_adapters_and_resets(tiny_model_dir, adapter):
    question = "hello there"
    base_answer = greedy_reply(tiny_model_dir, None, question, 6)
    style_answer = greedy_reply(tiny_model_dir, adapter, question, 6)
    assert base_answer != style_answer  # the adapter's random B moves the greedy answer: a switch is visible
    lines = [question, "/adapters", "/adapter nope", "/adapter base", "/reset", question, "/adapter style", "/reset",
             question, "/adapter base", "/reset", question, "/quit", "never read"]
    prompts, after = chat_session(tiny_model_dir, {"style": str(adapter)}, lines, max_new_tokens=6)
    assert prompts == ["[style] you> "] * 4 + ["[base] you> "] * 3 + ["[style] you> "] * 3 + ["[base] you> "] * 3
    said = dict(zip(lines, after))
    assert said["/adapters"] == "  base\n* style\n" and "no model 'nope'" in said["/adapter nope"]
    assert "now 'base'" in said["/adapter base"] and "conversation cleared" in said["/reset"]
    answers = [(text.partition("] ")[0], text.partition("] ")[2].strip()) for line, text in zip(lines, after)
               if line == question]
    # the adapter's answer, the base's, the adapter's again and the base's again: merging and unmerging leave
    # each model answering as transformers and PEFT answer on their own
    assert answers == [("[style", style_answer), ("[base", base_answer), ("[style", style_answer),
                       ("[base", base_answer)]


def test_chat_ends_on_end_of_input(tiny_model_dir):
    from adapterbench.chat import run_chat

    prompts, written = [], []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        raise EOFError

    assert run_chat(str(tiny_model_dir), dtype="fp32", read=read, write=written.append) is None
    assert prompts == ["[base] you> "]  # asked once, then Ctrl-D ended the chat without an answer
    assert written[0].startswith("chatting with 'base' (base loaded).") and written[1:] == ["\n"]
