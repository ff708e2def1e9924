"""The data layer: readers for the four kinds, record checks, markdown cleaning, seeded splits and n-gram leakage."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapterbench.cli import main
from adapterbench.datafiles.reading import check_file, holds_chat, read_records
from adapterbench.datafiles.splitting import leakage_report, split_file, split_records
from adapterbench.datafiles.writing import write_jsonl
from adapterbench.errors import UserError

D2L = Path(__file__).resolve().parents[2] / "shared" / "data" / "d2l"


def write(path: Path, content) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


MC = {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1}

# name, file name, content, kind, extra args, expected line, field, fragment of the message
BAD_INPUTS = [
    ("malformed_json_line", "qa.jsonl", jsonl(MC) + '{"question": "x", "answer": 1\n',
     "multiple_choice", [], 2, None, "malformed JSON"),
    ("csv_missing_column", "qa.csv", "question,choice0,choice1\nq,a,b\n",
     "multiple_choice", [], 1, "answer", "header: question, choice0, choice1"),
    ("missing_field", "sft.jsonl", jsonl({"instruction": "a", "output": "b"}, {"instruction": "c"}),
     "instruction", [], 2, "output", "missing"),
    ("empty_field", "sft.csv", "instruction,output\nhi,there\nhello,   \n",
     "instruction", [], 3, "output", "empty"),
    ("answer_index_out_of_range", "qa.jsonl", jsonl(MC, {**MC, "answer": 5}),
     "multiple_choice", [], 2, "answer", "answer index 5 out of range for 4 choices (expected 0-3 or a letter A-D)"),
    ("unknown_answer_letter", "qa.jsonl", jsonl({**MC, "answer": "Z"}),
     "multiple_choice", [], 1, "answer", "answer letter 'Z' out of range for 4 choices"),
    ("label_not_in_list", "sent.jsonl", jsonl({"text": "great", "label": "pos"}, {"text": "meh", "label": "neutral"}),
     "classification", ["--labels", "pos,neg"], 2, "label", "unknown label 'neutral' (expected one of: pos, neg)"),
    ("duplicate_id", "qa.jsonl", jsonl({**MC, "id": 7}, {**MC, "id": 8}, {**MC, "id": 7}),
     "multiple_choice", [], 3, "id", "duplicate id '7' (first on line 1"),
    ("non_utf8_bytes", "notes.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
     "text", [], 2, None, "not valid UTF-8: byte 0xe9 at byte offset 28"),
    ("empty_file", "qa.jsonl", "\n  \n", "multiple_choice", [], None, None, "no records"),
    ("header_only_csv", "qa.csv", "question,choice0,choice1,answer\n", "multiple_choice", [], None, None, "no records"),
    ("chat_unknown_sharegpt_speaker", "chats.jsonl",
     jsonl({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
           {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]}),
     "chat", [], 2, "conversations[1].from", "unknown from 'bot' (expected one of: human, gpt, system"),
    ("chat_turns_not_alternating", "chats.jsonl",
     jsonl({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "assistant", "content": "c"}]}),
     "chat", [], 1, "messages[2]", "turn 2 is 'assistant', expected 'user'"),
    ("chat_late_system_turn", "chats.jsonl",
     jsonl({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}),
     "chat", [], 1, "messages[1]", "a system turn comes first only"),
    ("chat_no_assistant_turn", "chats.jsonl", jsonl({"messages": [{"role": "user", "content": "a"}]}),
     "chat", [], 1, "messages", "no assistant turn"),
    ("chat_content_not_text", "chats.jsonl",
     jsonl({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]},
                         {"role": "assistant", "content": "b"}]}),
     "chat", [], 1, "messages[0].content", "expected a string, got array"),
    ("chat_from_csv", "chats.csv", "messages\nhi\n", "chat", [], None, None, "supported: .jsonl"),
]


@pytest.mark.parametrize("name,fname,content,kind,extra,line,field,fragment", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_fails_split_with_one_line_naming_file_line_field(
        tmp_path, capsys, name, fname, content, kind, extra, line, field, fragment):
    src, out = write(tmp_path / fname, content), tmp_path / "out"
    code, _, err = cli(capsys, "data", "split", src, "--kind", kind, "--out", out, *extra)
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: ")
    assert f"{src}:{line}: " in err if line else f"{src}: " in err
    assert (f"field '{field}': " in err) == bool(field)
    assert fragment in err
    assert not out.exists()


def test_missing_path_fails_split_and_check_without_writing(tmp_path, capsys):
    missing, out = tmp_path / "nope.jsonl", tmp_path / "out"
    code, _, err = cli(capsys, "data", "split", missing, "--kind", "instruction", "--out", out)
    assert code == 2 and err == f"error: {missing}: no such file or folder\n" and not out.exists()
    code, out_text, _ = cli(capsys, "data", "check", missing, "--kind", "instruction")
    assert code == 2 and "no such file or folder" in out_text


def test_split_writes_nothing_when_records_are_fewer_than_parts(tmp_path, capsys):
    src, out = write(tmp_path / "qa.jsonl", jsonl(MC, {**MC, "id": "b"})), tmp_path / "out"
    code, _, err = cli(capsys, "data", "split", src, "--kind", "multiple_choice", "--out", out,
                       "--ratios", "0.8,0.1,0.1")
    assert code == 2 and "cannot fill 3 parts" in err and not out.exists()


@pytest.mark.parametrize("ratios", [[0.5, 0.6], [1.0], [0.25] * 4, [1.2, -0.2], ["0.7", "abc"]])
def test_split_rejects_ratios_that_are_not_two_or_three_positive_shares_summing_to_one(ratios):
    with pytest.raises(UserError, match="expected 2 or 3 positive shares summing to 1"):
        split_records(list(range(10)), ratios, 0)


def test_unknown_kind_suggests_the_closest(tmp_path):
    with pytest.raises(UserError, match="did you mean 'multiple_choice'"):
        read_records(write(tmp_path / "a.jsonl", jsonl(MC)), "multiple-choice")


def test_unsupported_extension_lists_supported_ones(tmp_path):
    with pytest.raises(UserError, match=r"file type '\.xlsx' is not supported.*supported: \.jsonl, \.csv"):
        read_records(write(tmp_path / "a.xlsx", "x"), "instruction")


def test_check_reports_counts_stats_and_every_problem_at_once(tmp_path, capsys):
    src = write(tmp_path / "qa.jsonl", jsonl(MC, {**MC, "answer": "B"}, {**MC, "answer": 9}, {"question": "q"},
                                             {**MC, "answer": "c"}) + "not json\n")
    report = check_file(src, "multiple_choice", fields={}, labels=None)
    assert report["records"] == 3 and report["stats"]["answers"] == {"B": 2, "C": 1}
    assert [p.split(": ")[0] for p in report["problems"]] == [f"{src}:3", f"{src}:4", f"{src}:6"]
    code, out, err = cli(capsys, "data", "check", src, "--kind", "multiple_choice")
    assert code == 2 and "records: 3" in out and "3 problem(s)" in out and "Traceback" not in err
    code, out, _ = cli(capsys, "data", "check", src, "--kind", "multiple_choice", "--json")
    assert code == 2 and len(json.loads(out)["problems"]) == 3


def test_check_passes_a_clean_file(tmp_path, capsys):
    src = write(tmp_path / "sft.jsonl", jsonl({"instruction": "Say hi", "output": "hi"}))
    code, out, _ = cli(capsys, "data", "check", src, "--kind", "instruction")
    assert code == 0 and "records: 1" in out and "no problems found" in out


# ---------------------------------------------------------------- the five kinds

OPENAI_CHAT = {"id": "c1", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "What is LoRA?"},
                                        {"role": "assistant", "content": "A low-rank update."},
                                        {"role": "user", "content": "And QLoRA?"},
                                        {"role": "assistant", "content": "LoRA on a 4-bit base."}]}


def test_chat_reads_openai_and_sharegpt_spellings_as_the_same_turns(tmp_path):
    speakers = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = {"id": "c1", "source": "forum",
                "conversations": [{"from": speakers[t["role"]], "value": t["content"]} for t in OPENAI_CHAT["messages"]]}
    assert read_records(write(tmp_path / "a.jsonl", jsonl(OPENAI_CHAT)), "chat") == [OPENAI_CHAT]
    assert read_records(write(tmp_path / "b.jsonl", jsonl(sharegpt)), "chat") == [{**OPENAI_CHAT,
                                                                                  "source": "forum"}]
    mapped = write(tmp_path / "c.jsonl", jsonl({"dialog": OPENAI_CHAT["messages"]}))
    assert read_records(mapped, "chat", fields={"messages": "dialog"})[0]["messages"] == OPENAI_CHAT["messages"]
    assert holds_chat(tmp_path / "b.jsonl") and not holds_chat(write(tmp_path / "d.jsonl", jsonl(MC)))


def test_chat_check_counts_turns_and_split_keeps_each_conversation_whole(tmp_path, capsys):
    chats = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                          {"role": "assistant", "content": f"answer {i}"}] * (1 + i % 3)}
             for i in range(10)]
    src = write(tmp_path / "chats.jsonl", jsonl(*chats))
    code, out, _ = cli(capsys, "data", "check", src, "--kind", "chat")
    assert code == 0 and "turns per conversation: mean 3.8, max 6; with a system turn: 0" in out
    code, _, _ = cli(capsys, "data", "split", src, "--kind", "chat", "--out", tmp_path / "out", "--ratios", "0.7,0.3")
    assert code == 0
    parts = [json.loads(line) for part in ("train", "test")
             for line in (tmp_path / "out" / f"chats_{part}.jsonl").read_text().splitlines()]
    assert sorted(parts, key=lambda r: int(r["id"][1:])) == chats

def test_instruction_from_jsonl_and_csv(tmp_path):
    rows = read_records(write(tmp_path / "sft.jsonl", jsonl(
        {"instruction": " Translate ", "input": "chat", "output": "cat", "fail_mode": "literal"},
        {"id": 42, "instruction": "Say hi", "output": "hi"})), "instruction")
    assert rows == [{"id": "sft-1", "instruction": "Translate", "input": "chat", "output": "cat",
                     "fail_mode": "literal"},
                    {"id": "42", "instruction": "Say hi", "input": "", "output": "hi"}]
    rows = read_records(write(tmp_path / "sft.csv", '\ufeffinstruction,output\n"Two\nlines",ok\n'), "instruction")
    assert rows == [{"id": "sft-1", "instruction": "Two\nlines", "input": "", "output": "ok"}]


def test_multiple_choice_from_choices_list_choice_columns_and_letter_columns(tmp_path):
    from_list = read_records(write(tmp_path / "a.jsonl", jsonl({**MC, "answer": "(b)"})), "multiple_choice")
    assert from_list[0] == {"id": "a-1", "question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1}
    mmlu = read_records(write(tmp_path / "b.csv", "question,choice0,choice1,choice2,choice3,answer\n"
                              "2+2?,3,4,5,6,1\nPick,x,y,,,B\n"), "multiple_choice")
    assert [(r["choices"], r["answer"]) for r in mmlu] == [(["3", "4", "5", "6"], 1), (["x", "y"], 1)]
    letters = read_records(write(tmp_path / "c.jsonl", jsonl({"question": "q", "A": "x", "B": "y", "C": "z",
                                                              "answer": "c"})), "multiple_choice")
    assert letters[0]["choices"] == ["x", "y", "z"] and letters[0]["answer"] == 2
    csv_letters = read_records(write(tmp_path / "d.csv", "question,A,B,answer\nq,yes,no,A\n"), "multiple_choice")
    assert csv_letters[0]["choices"] == ["yes", "no"] and csv_letters[0]["answer"] == 0


def test_multiple_choice_needs_two_choices_and_no_gaps(tmp_path):
    with pytest.raises(UserError, match="expected at least 2"):
        read_records(write(tmp_path / "a.jsonl", jsonl({**MC, "choices": ["only"], "answer": 0})),
                     "multiple_choice")
    with pytest.raises(UserError, match=r"a\.csv:2: field 'choice1': empty choice"):
        read_records(write(tmp_path / "a.csv", "question,choice0,choice1,choice2,answer\nq,x,,z,0\n"),
                     "multiple_choice")


def test_classification_by_name_by_index_and_without_a_label_list(tmp_path):
    src = write(tmp_path / "s.jsonl", jsonl({"text": "great", "label": 0}, {"text": "bad", "label": "neg",
                                                                              "context": "review"}))
    rows = read_records(src, "classification", labels=["pos", "neg"])
    assert rows == [{"id": "s-1", "text": "great", "context": "", "label": "pos"},
                    {"id": "s-2", "text": "bad", "context": "review", "label": "neg"}]
    csv_rows = read_records(write(tmp_path / "s.csv", "text,label\ngreat,1\nbad,sarcastic\n"), "classification")
    assert [r["label"] for r in csv_rows] == ["1", "sarcastic"]
    by_index = read_records(tmp_path / "s.csv", "classification", labels=["no", "yes", "sarcastic"])
    assert [r["label"] for r in by_index] == ["yes", "sarcastic"]
    with pytest.raises(UserError, match="label index 0 needs a label list"):
        read_records(src, "classification")


def test_label_by_index_through_the_cli(tmp_path, capsys):
    src, out = write(tmp_path / "s.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10))), tmp_path / "o"
    code, _, _ = cli(capsys, "data", "split", src, "--kind", "classification", "--labels", "neg,pos", "--out", out)
    labels = {json.loads(line)["label"] for line in (out / "s_train.jsonl").read_text().splitlines()}
    assert code == 0 and labels == {"neg", "pos"}


def test_text_from_jsonl_and_csv_uses_id_field_or_stem_and_number(tmp_path):
    rows = read_records(write(tmp_path / "t.jsonl", jsonl({"text": "a"}, {"id": "x", "text": "b"})), "text")
    assert [(r["id"], r["text"]) for r in rows] == [("t-1", "a"), ("x", "b")]
    rows = read_records(write(tmp_path / "t.csv", "text,source\n*kept as is*,web\n"), "text")
    assert rows == [{"id": "t-1", "text": "*kept as is*", "source": "web"}]  # other columns travel with the record


def test_field_overrides_map_user_columns_and_reject_unknown_canonical_names(tmp_path):
    src = write(tmp_path / "p.jsonl", jsonl({"prompt": "Say hi", "completion": "hi", "key": "k1"}))
    rows = read_records(src, "instruction", fields={"instruction": "prompt", "output": "completion", "id": "key"})
    assert rows[0]["id"] == "k1" and rows[0]["instruction"] == "Say hi" and rows[0]["output"] == "hi"
    nested = write(tmp_path / "n.jsonl", jsonl({"instruction": "i", "instances": [{"input": "", "output": "o"}]}))
    assert read_records(nested, "instruction", fields={"output": "instances.0.output"})[0]["output"] == "o"
    with pytest.raises(UserError, match="unknown field 'ouput'.*did you mean 'output'"):
        read_records(src, "instruction", fields={"ouput": "completion"})


def test_field_override_through_the_cli(tmp_path, capsys):
    src = write(tmp_path / "p.csv", "prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(4)))
    code, out, _ = cli(capsys, "data", "check", src, "--kind", "instruction", "--field", "instruction=prompt",
                       "--field", "output=completion")
    assert code == 0 and "records: 4" in out
    code, out, _ = cli(capsys, "data", "check", src, "--kind", "instruction")
    assert code == 2 and "field 'instruction': missing column" in out and "--field instruction=COLUMN" in out


# ---------------------------------------------------------------- markdown

NOTES = """```{.python .input}
%load_ext d2lbook.tab
```

# Linear Regression
:label:`sec_linreg`

*Regression* problems pop up **often** :cite:`Legendre.1805`.
See [the docs](https://example.org) and :numref:`sec_linreg`.
<!-- an editor's note -->
Its loss is $\\sum_i (y_i - \\hat{y}_i)^2$ with `x_1 * x_2` kept.

![A figure](../img/fig.svg)
:width:`400px`

:begin_tab:`pytorch`
In PyTorch we call `backward`.
:end_tab:

~~~bash
pip install d2l

echo done
~~~

$$
a_1 * b_2 = c_3 * d_4
$$

[Discussions](https://discuss.d2l.ai/t/42)
"""


def test_markdown_drops_code_directives_headings_images_and_markup_but_keeps_math(tmp_path):
    paragraphs = [r["text"] for r in read_records(write(tmp_path / "notes.md", NOTES), "text")]
    assert paragraphs == [
        "Regression problems pop up often.\nSee the docs and sec_linreg.\n"
        "Its loss is $\\sum_i (y_i - \\hat{y}_i)^2$ with `x_1 * x_2` kept.",
        "In PyTorch we call `backward`.",
        "$$\na_1 * b_2 = c_3 * d_4\n$$",
    ]


def test_markdown_keeps_code_and_markup_when_asked(tmp_path):
    src = write(tmp_path / "notes.md", NOTES)
    with_code = [r["text"] for r in read_records(src, "text", keep_code=True)]
    assert "```{.python .input}\n%load_ext d2lbook.tab\n```" in with_code
    assert "~~~bash\npip install d2l\n\necho done\n~~~" in with_code
    with_markup = "\n\n".join(r["text"] for r in read_records(src, "text", keep_markup=True))
    assert "# Linear Regression\n:label:`sec_linreg`" in with_markup and "*Regression*" in with_markup
    assert "```" not in with_markup


def test_text_folder_reads_md_and_txt_recursively_with_path_ids(tmp_path):
    book = tmp_path / "book"
    (book / "chapter_b").mkdir(parents=True)
    (book / "chapter_a").mkdir()
    write(book / "chapter_b" / "intro.md", "# B\n\nFirst *b*.\n\nSecond b.\n")
    write(book / "chapter_a" / "notes.txt", "Plain *a* text.\n")
    write(book / "chapter_a" / "skip.py", "print('no')\n")
    rows = read_records(book, "text")
    assert [(r["id"], r["text"]) for r in rows] == [
        ("chapter_a/notes.txt#1", "Plain *a* text."), ("chapter_b/intro.md#1", "First b."),
        ("chapter_b/intro.md#2", "Second b.")]


def test_markdown_with_only_markup_has_no_records(tmp_path):
    with pytest.raises(UserError, match="no records"):
        read_records(write(tmp_path / "x.md", "# Title\n:label:`x`\n\n```\ncode\n```\n"), "text")


# ---------------------------------------------------------------- splits and leakage

def test_split_is_deterministic_per_seed():
    records = list(range(50))
    assert split_records(records, [0.7, 0.3], 1) == split_records(records, [0.7, 0.3], 1)
    assert split_records(records, [0.7, 0.3], 1) != split_records(records, [0.7, 0.3], 2)


def test_split_sizes_follow_ratios_and_keep_every_part_non_empty():
    assert [len(p) for p in split_records(list(range(10)), [0.7, 0.3], 0)] == [7, 3]
    three = split_records(list(range(10)), [0.8, 0.1, 0.1], 0)
    assert [len(p) for p in three] == [8, 1, 1] and sorted(sum(three, [])) == list(range(10))
    assert [len(p) for p in split_records(list(range(3)), [0.98, 0.01, 0.01], 0)] == [1, 1, 1]


def test_split_cli_writes_three_parts_and_a_leakage_report(tmp_path, capsys):
    src = write(tmp_path / "qa.jsonl", jsonl(*({**MC, "question": f"question {i}"} for i in range(20))))
    out = tmp_path / "out" / "nested"
    code, stdout, _ = cli(capsys, "data", "split", src, "--kind", "multiple_choice", "--out", out,
                          "--ratios", "0.8,0.1,0.1", "--seed", "3", "--name", "mc")
    assert code == 0 and "leakage" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["mc_leakage.json", "mc_test.jsonl", "mc_train.jsonl",
                                                     "mc_val.jsonl"]
    ids = {part: [json.loads(line)["id"] for line in (out / f"mc_{part}.jsonl").read_text().splitlines()]
           for part in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [16, 2, 2] and len(set(sum(ids.values(), []))) == 20
    report = json.loads((out / "mc_leakage.json").read_text())
    assert report["n_heldout"] == 4 and {it["id"] for it in report["items"]} == set(ids["val"] + ids["test"])


def test_leakage_of_a_copied_paragraph_is_its_full_length_and_unrelated_text_is_zero():
    copied = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
    train = ["Something else entirely about gradient descent.", copied.upper()]
    report = leakage_report(train, [copied, "Completely unrelated words about cooking pasta at home tonight."],
                            ngram=4, heldout_ids=["copy", "fresh"])
    copy_item, fresh_item = report["items"]
    assert copy_item == {"id": "copy", "longest_overlap": 15, "shared_ngram_share": 1.0}
    assert fresh_item == {"id": "fresh", "longest_overlap": 0, "shared_ngram_share": 0.0}
    assert report["share_over_threshold"] == 0.5 and report["mean_shared_ngram_share"] == 0.5
    assert report["worst"] == [{"id": "copy", "longest_overlap": 15, "span": copied[:-1]}]


def test_leakage_finds_a_copied_run_inside_new_text():
    train = ["alpha beta gamma delta epsilon zeta eta theta iota kappa"]
    held = "we now say: Alpha, beta, gamma, delta, epsilon, zeta and then something else"
    item = leakage_report(train, [held], ngram=3)["items"][0]
    assert item["longest_overlap"] == 6 and item["shared_ngram_share"] == pytest.approx(4 / 11)


def test_write_jsonl_is_utf8_and_hash_is_stable(tmp_path):
    path = tmp_path / "sub" / "r.jsonl"
    write_jsonl(path, [{"text": "café ∑"}])
    assert path.read_text(encoding="utf-8") == '{"text": "café ∑"}\n' and list(path.parent.iterdir()) == [path]
    from adapterbench.digest import file_sha256

    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_modules_import_without_heavy_libraries():
    code = ("import sys, adapterbench.datafiles.splitting; "  # it imports the reading, prose and writing modules
            "print([m for m in ('torch', 'transformers', 'pandas') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.skipif(not D2L.is_dir(), reason=f"the d2l corpus is not at {D2L} (shared dev data, optional)")
def test_d2l_markdown_folder_splits_with_a_leakage_report(tmp_path):
    summary = split_file(D2L, "text", tmp_path, ratios=[0.7, 0.3], seed=0, ngram=8, fields={}, labels=None,
                         keep_code=False, keep_markup=False, name=None)
    assert summary["records"] > 3000 and summary["parts"]["train"]["records"] > summary["parts"]["test"]["records"]
    report = json.loads((tmp_path / "d2l_leakage.json").read_text())
    assert report["n_heldout"] == summary["parts"]["test"]["records"] and 0 <= report["share_over_threshold"] < 1
    texts = [json.loads(line)["text"] for part in ("train", "test")
             for line in (tmp_path / f"d2l_{part}.jsonl").read_text().splitlines()]
    assert not any("```" in t or ":label:" in t or "{.python" in t for t in texts)
