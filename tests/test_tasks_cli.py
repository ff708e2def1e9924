"""`tasks build|list` and `runs list|show` from the command line: what a user types, what comes out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adapterbench.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "adapterbench" / "sample"


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


class Tagged(yaml.SafeLoader):
    """Reads lm-eval's `!function` tags as plain strings, to look at the YAML as lm-eval would receive it."""


Tagged.add_constructor("!function", lambda loader, node: f"!function {node.value}")


def test_tasks_build_writes_lm_eval_yaml_data_and_utils(tmp_path, capsys):
    code, out, _ = run(capsys, "tasks", "build", str(SAMPLE / "suite.yaml"), "--out", str(tmp_path / "tasks"))
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "tasks").iterdir())
    assert written == ["notes_mc.jsonl", "notes_mc.yaml", "notes_ppl.jsonl", "notes_ppl.yaml", "qa.jsonl", "qa.yaml",
                       "topics.jsonl", "topics.yaml", "utils.py"]
    qa = yaml.load((tmp_path / "tasks" / "qa.yaml").read_text(), Tagged)
    assert qa["output_type"] == "generate_until" and qa["dataset_path"] == "json"
    assert qa["process_results"] == "!function utils.process_generation"
    assert qa["generation_kwargs"]["max_gen_toks"] == 64
    assert {m["metric"] for m in qa["metric_list"]} >= {"bleu", "rouge1_f1", "rougeLsum_recall"}
    assert "--apply_chat_template" in out


def test_tasks_build_replaces_an_older_build_whole(tmp_path, capsys):
    out = tmp_path / "tasks"
    out.mkdir()
    (out / "stale.yaml").write_text("task: stale\n")
    run(capsys, "tasks", "build", str(SAMPLE / "suite.yaml"), "--out", str(out))
    assert not (out / "stale.yaml").exists()


def test_failed_build_leaves_the_previous_one_intact(tmp_path, capsys):
    out = tmp_path / "tasks"
    run(capsys, "tasks", "build", str(SAMPLE / "suite.yaml"), "--out", str(out))
    before = sorted(p.name for p in out.iterdir())
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: broken\ntasks:\n  - {{name: mc, type: multiple_choice, data: {tmp_path}/missing.jsonl}}\n")
    code, _, err = run(capsys, "tasks", "build", str(suite), "--out", str(out))
    assert code == 2 and "missing.jsonl" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_split_keeps_other_columns_and_group_by_tags_each_doc(tmp_path, capsys):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("id,instruction,output,fail_mode\n" + "".join(
        f"s{i},Question {i}?,Answer {i}.,{'' if i % 3 == 0 else ('hallucination' if i % 2 else 'format')}\n"
        for i in range(12)))
    code, _, _ = run(capsys, "data", "split", str(sheet), "--kind", "instruction", "--out", str(tmp_path / "data"))
    assert code == 0
    test_file = tmp_path / "data" / "sheet_test.jsonl"
    assert all("fail_mode" in json.loads(line) for line in test_file.read_text().splitlines())
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\ntasks:\n  - {{name: qa, type: generation, data: {test_file}, group_by: fail_mode}}\n")
    run(capsys, "tasks", "build", str(suite), "--out", str(tmp_path / "tasks"))
    docs = [json.loads(line) for line in (tmp_path / "tasks" / "qa.jsonl").read_text().splitlines()]
    rows = {json.loads(line)["id"]: json.loads(line) for line in test_file.read_text().splitlines()}
    assert [d["group"] for d in docs] == [rows[d["id"]]["fail_mode"] or "(none)" for d in docs]

    suite.write_text(f"name: s\ntasks:\n  - {{name: qa, type: generation, data: {test_file}, group_by: failmode}}\n")
    code, _, err = run(capsys, "tasks", "build", str(suite), "--out", str(tmp_path / "other"))
    assert code == 2 and "group_by" in err and "'failmode'" in err and not (tmp_path / "other").exists()


def test_tasks_list_shows_types_sizes_and_metrics(capsys):
    code, out, _ = run(capsys, "tasks", "list", str(SAMPLE / "suite.yaml"), "--json")
    assert code == 0
    listed = {t["name"]: t for t in json.loads(out)}
    assert listed["notes_mc"]["docs"] == 35 and listed["notes_mc"]["metrics"] == ["acc", "acc_norm"]
    assert "f1_macro" in listed["topics"]["metrics"] and "precision_quantization" in listed["topics"]["metrics"]


def test_runs_list_and_show_read_the_store(tiny_model_dir, tmp_path, capsys):
    db = str(tmp_path / "store.sqlite")
    code, out, _ = run(capsys, "eval", str(SAMPLE / "suite.yaml"), "--base", str(tiny_model_dir), "--limit", "2",
                       "--tasks", "notes_mc", "--store", db, "--json")
    eval_id = json.loads(out)["eval_id"]
    code, out, _ = run(capsys, "runs", "list", "--store", db)
    assert code == 0 and eval_id in out
    code, out, _ = run(capsys, "runs", "show", eval_id[:12], "--store", db, "--output-dir", str(tmp_path / "json"))
    assert code == 0 and "notes_mc" in out and "acc_norm" in out
    exported = json.loads(next((tmp_path / "json" / "base").glob("results_*.json")).read_text())
    assert "acc,none" in exported["results"]["notes_mc"]
    assert exported["adapterbench"]["label"] == "base"


def test_runs_show_unknown_id_is_a_user_error(tmp_path, capsys):
    from adapterbench.harness import database

    database.connect(tmp_path / "s.sqlite").close()  # an empty store: a missing one is refused as such
    code, _, err = run(capsys, "runs", "show", "ev-nope", "--store", str(tmp_path / "s.sqlite"))
    assert code == 2 and "ev-nope" in err


@pytest.mark.slow
def test_demo_runs_every_step_on_the_default_model(tmp_path, capsys):
    """`adapterbench demo` at a tiny size: 1 training step (evaluated at steps 0 and 1), 3 items per task, on
    SmolLM2-135M-Instruct."""
    from adapterbench.harness import database

    out = tmp_path / "demo"
    code, printed, _ = run(capsys, "demo", "--out", str(out), "--steps", "1", "--limit", "3")
    assert code == 0
    assert all(f"{n}/5" in printed for n in range(1, 6)) and "gate " in printed
    assert {p.name for p in (out / "report").iterdir()} == {"report.html", "report.tex", "report_table.tex",
                                                            "report.md"}
    assert {p.name for p in (out / "gate").iterdir()} == {"verdict.json", "verdict.md", "junit.xml"}
    verdict = json.loads((out / "gate" / "verdict.json").read_text())
    assert {row["task"] for row in verdict["rows"]} == {"notes_mc", "notes_ppl", "qa", "topics"}
    with database.connect(out / "demo.sqlite") as conn:
        evaluation = database.load_evaluation(conn, "latest")
    assert [m["label"] for m in evaluation["models"]] == ["base", "qa"]
    base_ppl = next(s["value"] for s in evaluation["scores"]
                    if s["label"] == "base" and s["metric"] == "word_perplexity")
    assert 1 < base_ppl < 1000  # a real model, not noise
    assert (out / "runs" / "qa" / "best" / "adapter_config.json").exists()


def test_cluster_by_tags_each_doc_keeps_its_hash_and_language_picks_the_rouge_hook(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Вопрос {i}?", "output": f"Ответ {i}.",
                                        **({"paragraph": f"p{i // 3}"} if i != 4 else {})}) + "\n"
                            for i in range(8)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\nlanguage: ru\ntasks:\n  - {{name: qa-ru, type: generation, data: {data}}}\n"
                     f"  - {{name: qa_en, type: generation, data: {data}, cluster_by: paragraph, language: en-GB}}\n")
    code, _, _ = run(capsys, "tasks", "build", str(suite), "--out", str(tmp_path / "tasks"))
    assert code == 0
    plain, clustered = ([json.loads(line) for line in (tmp_path / "tasks" / f"{name}.jsonl").read_text().splitlines()]
                        for name in ("qa-ru", "qa_en"))
    assert [d.get("cluster") for d in clustered] == ["p0", "p0", "p0", "p1", None, "p1", "p2", "p2"]
    assert "cluster" not in plain[0]
    assert [d["doc_hash"] for d in clustered] == [d["doc_hash"] for d in plain]  # still paired with older runs
    ru = yaml.load((tmp_path / "tasks" / "qa-ru.yaml").read_text(), Tagged)
    en = yaml.load((tmp_path / "tasks" / "qa_en.yaml").read_text(), Tagged)
    assert ru["process_results"] == "!function utils.qa_ru_process_generation"
    assert en["process_results"] == "!function utils.process_generation"
    utils = (tmp_path / "tasks" / "utils.py").read_text()
    assert "qa_ru_process_generation = partial(process_generation, language='ru')" in utils
    namespace: dict = {}
    exec(utils, namespace)  # the generated hooks run: Cyrillic answers score above 0 in Russian
    doc = {"reference": "Ответ один."}
    assert namespace["qa_ru_process_generation"](doc, ["ответ один"])["rougeL_f1"] == 1.0
    assert namespace["process_generation"](doc, ["ответ один"])["rougeL_f1"] == 0.0

    suite.write_text(f"name: s\ntasks:\n  - {{name: qa, type: generation, data: {data}, cluster_by: para}}\n")
    code, _, err = run(capsys, "tasks", "build", str(suite), "--out", str(tmp_path / "other"))
    assert code == 2 and "cluster_by: no record has a column 'para'" in err


def test_a_label_named_like_a_class_average_is_refused_at_its_line(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    for label in ("macro", "weighted", "macro!"):
        suite.write_text(f"name: s\ntasks:\n  - name: topics\n    type: classification\n    data: x.jsonl\n"
                         f"    labels: [good, '{label}']\n")
        code, out, err = run(capsys, "tasks", "list", str(suite))
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"error: {suite}:6: field 'tasks[0].labels': label '{label}' would name its F1 'f1_")
    suite.write_text("name: s\nlanguage: english\ntasks:\n  - {name: t, type: perplexity, data: x.txt}\n")
    code, _, err = run(capsys, "tasks", "list", str(suite))
    assert code == 2 and f"{suite}:2: field 'language'" in err
