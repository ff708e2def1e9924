"""Trying a model by hand: `generate` answers a prompts file side by side into the store, with the eval's decoding;
`chat` streams answers, switches adapters and forgets on /reset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adapterbench.cli import main
from adapterbench.errors import UserError
from adapterbench.harness import store as store_mod
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
    with store_mod.connect(store) as conn:
        saved = store_mod.load_evaluation(conn, printed["eval_id"])
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


def test_chat_streams_switches_adapters_and_resets(tiny_model_dir, adapter):
    from adapterbench.chat import run_chat

    lines = iter(["hello there", "/adapters", "/adapter nope", "/adapter base", "hello there", "/reset", "/quit",
                  "never read"])
    prompts, written = [], []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        return next(lines)

    run_chat(str(tiny_model_dir), {"style": str(adapter)}, max_new_tokens=6, dtype="fp32", read=read,
             write=written.append)
    text = "".join(written)
    assert prompts == ["[style] you> "] * 4 + ["[base] you> "] * 3
    assert "* style" in text and "no model 'nope'" in text and "now 'base'" in text and "conversation cleared" in text
    answers = [chunk for chunk in text.split("[") if chunk.startswith(("style] ", "base] ")) and "you>" not in chunk]
    assert len(answers) == 2  # one streamed answer per model


def test_chat_ends_on_end_of_input(tiny_model_dir):
    from adapterbench.chat import run_chat

    def read(prompt: str) -> str:
        raise EOFError

    run_chat(str(tiny_model_dir), dtype="fp32", read=read, write=lambda text: None)
