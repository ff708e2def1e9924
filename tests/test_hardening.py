"""Hardening against hostile input (issue 12) beyond the bad-input table: what must still work next to what is
refused (YAML aliases, classification task names with '-', the checks before training), what is left untouched (a
foreign SQLite file), and untrusted text shown safely (bidi overrides and escape sequences in reports and the
terminal, spreadsheet formulas in the predictions CSV)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from adapterbench.cli import main
from adapterbench.config import MAX_YAML_NODES, key_line, load_suite, load_train
from adapterbench.errors import UserError
from adapterbench.harness import database, exports
from adapterbench.untrusted import visible, visible_json

QA = "".join(json.dumps({"instruction": f"q{i}?", "output": f"a{i}."}) + "\n" for i in range(3))
TOPICS = "".join(json.dumps({"text": f"t{i}", "label": ["pos", "neg"][i % 2]}) + "\n" for i in range(4))
HOSTILE = "\u202eevil\u202c \x1b[2J\x1b]8;;http://x\x07link\x1b]8;;\x07 \x9b31m done\r"


def bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\nname: s\ntasks: []\n"


def test_an_alias_bomb_is_refused_where_it_grows_and_key_lines_give_up_on_it(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(bomb(9))  # 9**10 values once expanded: walking it would never end
    with pytest.raises(UserError, match=r"suite.yaml:6: invalid YAML: aliases \(\*name\) expand this document"):
        load_suite(path)
    assert key_line(path, ("a9",)) is None


def test_aliases_and_merge_keys_within_the_bound_still_load_with_their_lines(tmp_path):
    (tmp_path / "qa.jsonl").write_text(QA)
    path = tmp_path / "suite.yaml"
    text = ("name: s\ntasks:\n  - &gen {name: a, type: generation, data: qa.jsonl, max_new_tokens: 16}\n"
            "  - {<<: *gen, name: b}\n  - *gen\n")
    path.write_text(text.replace("  - *gen\n", ""))
    assert [(t.name, t.max_new_tokens) for t in load_suite(path).tasks] == [("a", 16), ("b", 16)]
    path.write_text(text)  # the alias repeats task a: refused by name, not by size
    with pytest.raises(UserError, match="task names must be unique; repeated: a"):
        load_suite(path)
    path.write_text(text.replace("  - *gen\n", "").replace("name: b}", "name: b, max_new_tokens: 0}"))
    with pytest.raises(UserError, match=r"suite.yaml:4: field 'tasks\[1\].max_new_tokens'"):
        load_suite(path)
    assert 9 ** 5 < MAX_YAML_NODES < 9 ** 6  # bomb(4) (~66,000 values) still loads; bomb(5) does not
    path.write_text(bomb(4))
    with pytest.raises(UserError, match="field 'a0': unknown key"):
        load_suite(path)


def test_a_classification_task_named_with_a_dash_compiles_into_lm_eval_tasks(tmp_path):
    from adapterbench.harness.evaluate import load_tasks

    (tmp_path / "t.jsonl").write_text(TOPICS)
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\ntasks:\n  - {name: my-topics, type: classification, data: t.jsonl, labels: [pos, neg]}\n")
    loaded = load_tasks(load_suite(path), tmp_path / "tasks")  # imports the generated utils.py through lm-eval
    task = next(iter(loaded[0][1]["tasks"].values()))
    assert task.config.task == "my-topics"
    assert set(task.aggregation()) >= {"f1_macro", "f1_pos", "precision_neg"}


def test_a_foreign_sqlite_file_is_refused_and_left_byte_for_byte(tmp_path):
    path = tmp_path / "contacts.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for check in (database.connect, database.check_store, database.inspect_store):
        with pytest.raises(UserError, match="an SQLite file of another program .*left untouched"):
            check(path)
    assert path.read_bytes() == before  # still in rollback-journal mode (header bytes 18-19), no schema added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contacts.db"]


def test_checks_before_training_accept_what_the_evaluations_measure(tmp_path, tiny_model_dir):
    from adapterbench.training.loop import check_before_loading

    (tmp_path / "qa.jsonl").write_text(QA)
    (tmp_path / "suite.yaml").write_text("name: s\ntasks:\n  - {name: qa, type: generation, data: qa.jsonl}\n")
    path = tmp_path / "train.yaml"
    path.write_text(f"base_model: {tiny_model_dir}\ndata: {{format: instruction, train: qa.jsonl, val: qa.jsonl}}\n"
                    "max_steps: 1\neval: {every: 1, suite: suite.yaml}\nearly_stopping: {metric: qa/rougeL_f1, "
                    "mode: max}\n")
    for metric in ("qa/rougeL_f1", "qa/bleu", "val_loss"):
        check_before_loading(load_train(path, [f"early_stopping.metric={metric}"]), tmp_path / "s.sqlite")
    with pytest.raises(UserError, match=r"train.yaml:5: field 'early_stopping.metric': 'qa/acc' is never measured; "
                                        r"its evaluations measure: val_loss, qa/bleu"):
        check_before_loading(load_train(path, ["early_stopping.metric=qa/acc"]), tmp_path / "s.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qa.jsonl", "suite.yaml", "train.yaml"]


def test_text_fields_refuse_numbers_while_ids_and_labels_may_be_integers(tmp_path):
    from adapterbench.datafiles.reading import read_records

    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": 7, "text": "fine", "label": 1}) + "\n")
    assert read_records(path, "classification", labels=["pos", "neg"]) == [
        {"id": "7", "text": "fine", "context": "", "label": "neg"}]
    path.write_text(json.dumps({"id": 7, "text": 1.0, "label": 1}) + "\n")
    with pytest.raises(UserError, match="field 'text': expected a string, got number 1.0"):
        read_records(path, "classification", labels=["pos", "neg"])


def test_visible_shows_acting_characters_and_keeps_the_rest():
    assert visible("a\tb\nc\r\nd") == "a\tb\nc\r\nd"
    assert visible(HOSTILE) == ("[U+202E]evil[U+202C] [U+001B][2J[U+001B]]8;;http://x[U+0007]link[U+001B]]8;;"
                                "[U+0007] [U+009B]31m done[U+000D]")
    text = json.dumps({"x": HOSTILE}, ensure_ascii=False)
    assert json.loads(visible_json(text)) == {"x": HOSTILE} and "\u202e" not in visible_json(text)


def generate_evaluation(hostile: str) -> dict:
    samples = [{"label": label, "task": "prompts", "doc_id": f"p{i}", "doc_hash": f"h{i}", "prompt": f"Say {hostile}",
                "prediction": f"{label} {hostile}", "reference": None, "metrics": {}}
               for label in ("base", "qa") for i in range(2)]
    return {"id": "ev-20260101-000000-abcd", "created_at": "2026-01-01T00:00:00+00:00", "kind": "generate",
            "suite": {"name": "prompts", "path": None}, "base_ref": "default", "config": {}, "command": "x",
            "environment": {}, "train_run": None, "step": None, "tokens_seen": None,
            "models": [{"label": label, "role": "base" if label == "base" else "adapter", "path": None,
                        "sha256": None, "base_name": None, "manifest": None, "lm_eval": None}
                       for label in ("base", "qa")],
            "scores": [], "samples": samples}


def test_reports_show_bidi_overrides_and_escape_sequences_as_code_points():
    from adapterbench.reports.context import build_context
    from adapterbench.reports.render import render

    files = render(build_context([generate_evaluation(HOSTILE)], iters=50))
    for name, text in files.items():
        assert not any(ch in text for ch in "\u202e\u202c\x1b\x07\x9b\r"), name
    assert "[U+202E]evil" in files["report.html"] and "[U+001B]" in files["report.html"]
    assert r"\[U+202E\]evil" in files["report.md"] and "[U+001B]" in files["report.tex"]  # LaTeX drops bidi


def test_terminal_output_neutralises_escapes_and_json_stays_exact(tmp_path, capsys):
    with database.connect(tmp_path / "s.sqlite") as conn:
        database.save_evaluation(conn, generate_evaluation(HOSTILE))
    conn.close()
    for argv in (["runs", "show", "ev-2026", "--store", str(tmp_path / "s.sqlite")],
                 ["runs", "show", "ev-2026", "--store", str(tmp_path / "s.sqlite"), "--json"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert not any(ch in out for ch in "\u202e\x1b\x07\x9b")
    assert json.loads(out)["eval_id"] == "ev-20260101-000000-abcd"
    with pytest.raises(SystemExit) as exit_info:  # the error line names a file whose name holds escapes
        main(["data", "split", str(tmp_path / "\x1b[2J\u202egone.jsonl"), "-k", "text", "--name", "n"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "[U+001B][2J[U+202E]gone.jsonl: no such file" in err
    assert "\x1b" not in err and "\u202e" not in err


def test_predictions_csv_defuses_spreadsheet_formulas(tmp_path):
    evaluation = generate_evaluation("x")
    payloads = ["=HYPERLINK(\"http://evil\",\"click\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain -1"]
    evaluation["samples"] = [{**evaluation["samples"][0], "label": label, "doc_id": f"p{i}", "prediction": payload}
                             for i, payload in enumerate(payloads) for label in ("base", "qa")]
    evaluation["samples"][0]["doc_id"] = "=1+1"
    path = exports.write_predictions_csv(evaluation, tmp_path / "p.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'=1+1" in cells and "'=HYPERLINK(\"http://evil\",\"click\")" in cells and "'-2+3" in cells
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    assert "plain -1" in cells and rows[0][:2] == ["task", "id"]


def test_an_unexpected_exception_is_one_line_pointing_to_debug(monkeypatch, capsys, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr("adapterbench.datafiles.reading.check_file", broken)
    argv = ["data", "check", str(tmp_path / "x.jsonl"), "-k", "text"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "internal error, RuntimeError: something unexpected" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="something"):
        main([*argv, "--debug"])


def test_usage_errors_of_the_parser_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "suite.yaml", "--limit", "many"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines() == [
        "error: Invalid value for '--limit': Input should be a valid integer, unable to parse string as an integer "
        "(see: adapterbench eval --help)"]
