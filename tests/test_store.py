"""The results store: evaluations round-trip whole or not at all, ids resolve by prefix/`latest`/label, and the
exports (lm-eval JSON, predictions CSV) and text views keep what users read."""

from __future__ import annotations

import copy
import csv
import sqlite3

import pytest

from adapterbench.errors import UserError
from adapterbench.harness import database, exports, views
from adapterbench.record_types import Evaluation, EvaluationSummary, ModelEntry, Sample, Score, SuiteRef

LM_EVAL = {
    "results": {"notes_mc": {"alias": "notes_mc", "acc,none": 0.5, "acc_stderr,none": 0.1}},
    "configs": {"notes_mc": {"task": "notes_mc", "output_type": "multiple_choice"}},
    "versions": {"notes_mc": 1.0}, "n-shot": {"notes_mc": 0}, "higher_is_better": {"notes_mc": {"acc": True}},
    "n-samples": {"notes_mc": {"original": 2, "effective": 2}}, "config": {"model": "hf", "batch_size": 1},
}
TRICKY = 'Il a dit : "oui, non"\npuis « ça » — 東京, 🙂'


def make_evaluation(**overrides) -> dict:
    evaluation = {
        "suite": {"name": "sample", "path": "examples/sample/suite.yaml"},
        "base_ref": "default",
        "config": {"batch_size": 1, "dtype": "float32"},
        "command": "adapterbench eval examples/sample/suite.yaml --adapter qa=runs/qa",
        "environment": {"python": "3.11.7", "lm_eval": "0.4.9"},
        "kind": "eval", "train_run": None, "step": None, "tokens_seen": None,
        "models": [
            {"label": "base", "role": "base", "path": "/cache/smollm2", "sha256": "a" * 64, "base_name": "smollm2",
             "manifest": None, "lm_eval": copy.deepcopy(LM_EVAL)},
            {"label": "qa", "role": "adapter", "path": "runs/qa/adapter", "sha256": "b" * 64, "base_name": "smollm2",
             "manifest": {"lora": {"r": 16, "alpha": 16}, "step": 200}, "lm_eval": None},
        ],
        "scores": [
            {"label": "base", "task": "notes_mc", "metric": "acc", "value": 0.5, "stderr": 0.1, "n": 2},
            {"label": "qa", "task": "notes_mc", "metric": "acc", "value": 1.0, "stderr": 0.0, "n": 2},
            {"label": "base", "task": "qa", "metric": "bleu", "value": 12.5, "stderr": None, "n": 2},
            {"label": "qa", "task": "qa", "metric": "bleu", "value": 30.25, "stderr": None, "n": 2},
        ],
        "samples": [
            {"label": "base", "task": "notes_mc", "doc_id": "0", "doc_hash": "h0", "prompt": "Q0?",
             "prediction": "A", "reference": "B", "metrics": {"acc": 0.0}, "group": "recall"},
            {"label": "base", "task": "notes_mc", "doc_id": "1", "doc_hash": "h1", "prompt": "Q1?",
             "prediction": "C", "reference": "C", "metrics": {"acc": 1.0}, "group": None},
            {"label": "qa", "task": "notes_mc", "doc_id": "0", "doc_hash": "h0", "prompt": "Q0?",
             "prediction": "B", "reference": "B", "metrics": {"acc": 1.0}, "group": "recall"},
            {"label": "qa", "task": "notes_mc", "doc_id": "1", "doc_hash": "h1", "prompt": "Q1?",
             "prediction": "C", "reference": "C", "metrics": {"acc": 1.0}, "group": None},
            {"label": "base", "task": "qa", "doc_id": "0", "doc_hash": "q0", "prompt": TRICKY,
             "prediction": "peut-être, " + TRICKY, "reference": TRICKY, "metrics": {"bleu": [0.1, "ref"]}, "group": None},
            {"label": "qa", "task": "qa", "doc_id": "0", "doc_hash": "q0", "prompt": TRICKY,
             "prediction": 'say "hi",\r\nbye', "reference": TRICKY, "metrics": {"bleu": [0.9, "ref"]}, "group": None},
        ],
    }
    for sample in evaluation["samples"]:  # a task's cluster_by value: one paragraph, or none
        sample["cluster"] = "para-1" if sample["task"] == "notes_mc" else None
    evaluation.update(overrides)
    return evaluation


@pytest.fixture
def conn(tmp_path):
    connection = database.connect(tmp_path / "sub" / "store.sqlite")
    yield connection
    connection.close()


def row_counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("evaluations", "models", "scores", "samples")}


def test_saved_evaluation_loads_back_equal(conn):
    evaluation = make_evaluation(id="ev-20260101-000000-abcd", created_at="2026-01-01T00:00:00+00:00")
    assert database.save_evaluation(conn, evaluation) == "ev-20260101-000000-abcd"
    assert database.load_evaluation(conn, "ev-20260101-000000-abcd") == evaluation


def test_a_loaded_evaluation_has_exactly_the_keys_its_records_declare(conn):
    loaded = database.load_evaluation(conn, database.save_evaluation(conn, make_evaluation()))
    assert set(loaded) == Evaluation.__required_keys__ | Evaluation.__optional_keys__
    assert set(loaded["suite"]) == SuiteRef.__required_keys__
    for record, rows, not_kept in ((ModelEntry, loaded["models"], {"lm_eval_samples"}),
                                   (Score, loaded["scores"], set()), (Sample, loaded["samples"], set())):
        assert rows and all(set(row) == (record.__required_keys__ | record.__optional_keys__) - not_kept
                            for row in rows), record.__name__
    assert set(database.list_evaluations(conn)[0]) == EvaluationSummary.__required_keys__


def test_load_without_samples_skips_them(conn):
    eval_id = database.save_evaluation(conn, make_evaluation())
    loaded = database.load_evaluation(conn, eval_id, with_samples=False)
    assert loaded["samples"] == [] and len(loaded["scores"]) == 4


def test_train_step_fields_round_trip_and_stay_out_of_eval_listing(conn):
    eval_id = database.save_evaluation(conn, make_evaluation(kind="train_step", train_run="runs/qa", step=50,
                                                         tokens_seen=12800))
    loaded = database.load_evaluation(conn, eval_id)
    assert (loaded["kind"], loaded["train_run"], loaded["step"], loaded["tokens_seen"]) == \
        ("train_step", "runs/qa", 50, 12800)
    assert database.list_evaluations(conn) == []
    assert [r["id"] for r in database.list_evaluations(conn, kind="train_step")] == [eval_id]


def test_store_uses_wal_and_foreign_keys(conn):
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_schema_version_is_recorded_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "store.sqlite"
    database.connect(path).close()
    database.connect(path).close()  # reopening does not add a second version row
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(database.SCHEMA_VERSION,)]
    raw.execute("INSERT INTO schema_version VALUES (?, NULL)", (database.SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(UserError, match=rf"schema version {database.SCHEMA_VERSION + 1}, newer") as err:
        database.connect(path)
    assert err.value.path == path


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    path = tmp_path / "store.sqlite"
    with database.connect(path) as conn:
        old_id = database.save_evaluation(conn, make_evaluation())
    raw = sqlite3.connect(path)  # turn it back into what adapterbench 1 wrote
    raw.execute("ALTER TABLE samples DROP COLUMN cluster_name")
    raw.execute("ALTER TABLE samples DROP COLUMN group_name")
    raw.execute("UPDATE schema_version SET version = 1")
    raw.commit()
    raw.close()
    with database.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3]
        assert {(s["group"], s["cluster"]) for s in database.load_evaluation(conn, old_id)["samples"]} == {(None, None)}
        new_id = database.save_evaluation(conn, make_evaluation())
        assert {s["group"] for s in database.load_evaluation(conn, new_id)["samples"]} == {"recall", None}


def test_a_file_that_is_not_sqlite_is_a_user_error(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(UserError, match="not a usable adapterbench store"):
        database.connect(path)


def test_default_store_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("ADAPTERBENCH_STORE", raising=False)
    assert str(database.default_store_path()) == "adapterbench.sqlite"
    monkeypatch.setenv("ADAPTERBENCH_STORE", str(tmp_path / "x.sqlite"))
    assert database.default_store_path() == tmp_path / "x.sqlite"


@pytest.mark.parametrize("break_it", [
    lambda ev: ev["samples"][-1].update(metrics={"bleu": object()}),  # not JSON: fails after other rows went in
    lambda ev: ev["samples"].append(dict(ev["samples"][0])),  # duplicate primary key: SQLite refuses midway
])
def test_a_failure_midway_leaves_no_rows_anywhere(conn, break_it):
    database.save_evaluation(conn, make_evaluation(id="ev-keep"))
    before = row_counts(conn)
    evaluation = make_evaluation(id="ev-broken")
    break_it(evaluation)
    with pytest.raises((TypeError, sqlite3.IntegrityError)):
        database.save_evaluation(conn, evaluation)
    assert row_counts(conn) == before
    assert not conn.in_transaction
    database.save_evaluation(conn, make_evaluation(id="ev-after"))  # the connection is still usable


def test_score_or_sample_label_not_among_the_models_is_a_value_error(conn):
    evaluation = make_evaluation()
    evaluation["scores"][0]["label"] = "ghost"
    with pytest.raises(ValueError, match="ghost"):
        database.save_evaluation(conn, evaluation)
    evaluation = make_evaluation()
    evaluation["samples"][0]["label"] = "ghost"
    with pytest.raises(ValueError, match="ghost"):
        database.save_evaluation(conn, evaluation)
    assert row_counts(conn)["evaluations"] == 0


def test_missing_stderr_and_nan_value_are_kept_as_missing(conn):
    evaluation = make_evaluation()
    evaluation["scores"][0].update(stderr="N/A")
    evaluation["scores"][1].update(value=float("nan"), stderr=float("nan"))
    loaded = database.load_evaluation(conn, database.save_evaluation(conn, evaluation))
    assert loaded["scores"][0]["stderr"] is None and loaded["scores"][1]["stderr"] is None
    assert loaded["scores"][1]["value"] != loaded["scores"][1]["value"]  # NaN


def test_new_ids_are_readable_and_distinct():
    import re

    ids = {database.new_evaluation_id() for _ in range(10_000)}  # one second's worth share the time part
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"ev-20\d{6}-\d{6}-[0-9a-f]{16}", i) for i in ids)  # 64 random bits


def test_list_is_newest_first_with_labels_and_task_count(conn):
    for i, created in enumerate(["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00",
                                 "2026-01-01T00:00:00+00:00"]):
        database.save_evaluation(conn, make_evaluation(id=f"ev-{i}", created_at=created))
    rows = database.list_evaluations(conn)
    assert [r["id"] for r in rows] == ["ev-1", "ev-0", "ev-2"]
    assert rows[0]["models"] == ["base", "qa"] and rows[0]["n_tasks"] == 2
    assert rows[0]["suite_name"] == "sample" and rows[0]["base_ref"] == "default"
    assert [r["id"] for r in database.list_evaluations(conn, limit=1)] == ["ev-1"]


def test_load_accepts_a_unique_prefix_and_latest(conn):
    database.save_evaluation(conn, make_evaluation(id="ev-20260101-000000-aaaa", created_at="2026-01-01T00:00:00Z"))
    database.save_evaluation(conn, make_evaluation(id="ev-20260102-000000-bbbb", created_at="2026-01-02T00:00:00Z"))
    assert database.load_evaluation(conn, "ev-20260101")["id"] == "ev-20260101-000000-aaaa"
    assert database.load_evaluation(conn, "latest")["id"] == "ev-20260102-000000-bbbb"
    with pytest.raises(UserError, match="matches 2 evaluations"):
        database.load_evaluation(conn, "ev-2026")


def test_unknown_id_names_it_and_lists_recent_ones(conn):
    database.save_evaluation(conn, make_evaluation(id="ev-20260101-000000-aaaa"))
    with pytest.raises(UserError, match=r"no evaluation 'ev-nope'.*recent: ev-20260101-000000-aaaa"):
        database.load_evaluation(conn, "ev-nope")


def test_latest_in_an_empty_store_is_a_user_error(conn):
    with pytest.raises(UserError, match="no evaluations yet"):
        database.load_evaluation(conn, "latest")


def test_resolve_model_ref_forms(conn):
    database.save_evaluation(conn, make_evaluation(id="ev-old", created_at="2026-01-01T00:00:00Z"))
    database.save_evaluation(conn, make_evaluation(id="ev-new", created_at="2026-01-02T00:00:00Z"))
    database.save_evaluation(conn, make_evaluation(id="ev-train", created_at="2026-01-03T00:00:00Z", kind="train_step"))
    assert database.resolve_model_ref(conn, "ev-old:qa") == ("ev-old", "qa")
    assert database.resolve_model_ref(conn, "ev-o:base") == ("ev-old", "base")
    assert database.resolve_model_ref(conn, "latest:qa") == ("ev-new", "qa")
    assert database.resolve_model_ref(conn, "qa") == ("ev-new", "qa")  # training steps are not "its latest evaluation"


def test_resolve_model_ref_errors(conn):
    database.save_evaluation(conn, make_evaluation(id="ev-one"))
    with pytest.raises(UserError, match=r"ev-one has no model 'ghost'; its models: base, qa"):
        database.resolve_model_ref(conn, "ev-one:ghost")
    with pytest.raises(UserError, match=r"no evaluation has a model labelled 'ghost'; labels in the store: base, qa"):
        database.resolve_model_ref(conn, "ghost")
    with pytest.raises(UserError, match="no evaluation 'ev-two'"):
        database.resolve_model_ref(conn, "ev-two:qa")


def test_scores_table_sorts_by_task_metric_then_model_order():
    rows = exports.scores_table(make_evaluation())
    assert [(r["task"], r["metric"], r["label"]) for r in rows] == [
        ("notes_mc", "acc", "base"), ("notes_mc", "acc", "qa"), ("qa", "bleu", "base"), ("qa", "bleu", "qa")]
    assert set(rows[0]) == {"label", "task", "metric", "value", "stderr", "n"}


def test_export_keeps_the_lm_eval_dict_and_adds_identity(conn):
    loaded = database.load_evaluation(conn, database.save_evaluation(conn, make_evaluation()))
    out = exports.export_lm_eval(loaded, "base")
    assert {k: v for k, v in out.items() if k != "adapterbench"} == LM_EVAL
    assert out["adapterbench"] == {"evaluation_id": loaded["id"], "label": "base", "role": "base",
                                   "path": "/cache/smollm2", "sha256": "a" * 64, "base_name": "smollm2",
                                   "manifest": None}
    assert "adapterbench" not in loaded["models"][0]["lm_eval"]  # the evaluation itself is not modified


def test_export_without_lm_eval_dict_is_built_in_lm_eval_shape():
    evaluation = make_evaluation(id="ev-x")
    evaluation["scores"].append({"label": "qa", "task": "qa", "metric": "exact_match,strict-match", "value": 0.25,
                                 "stderr": 0.05, "n": 2})
    out = exports.export_lm_eval(evaluation, "qa")
    assert out["results"]["notes_mc"] == {"alias": "notes_mc", "acc,none": 1.0, "acc_stderr,none": 0.0}
    assert out["results"]["qa"] == {"alias": "qa", "bleu,none": 30.25, "bleu_stderr,none": "N/A",
                                    "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.05}
    assert out["n-samples"] == {"notes_mc": {"original": 2, "effective": 2}, "qa": {"original": 2, "effective": 2}}
    assert out["adapterbench"]["manifest"] == {"lora": {"r": 16, "alpha": 16}, "step": 200}
    with pytest.raises(UserError, match="no model 'ghost'"):
        exports.export_lm_eval(evaluation, "ghost")


def test_predictions_csv_has_one_row_per_item_and_tricky_text_survives(tmp_path):
    evaluation = make_evaluation()
    path = exports.write_predictions_csv(evaluation, tmp_path / "out" / "predictions.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["task", "id", "input", "reference", "group", "base", "qa"]  # a task has group_by
    assert [tuple(r[:2]) for r in rows[1:]] == [("notes_mc", "0"), ("notes_mc", "1"), ("qa", "0")]
    assert rows[1][4] == "recall" and rows[2][4] == ""
    assert rows[3] == ["qa", "0", TRICKY, TRICKY, "", "peut-être, " + TRICKY, 'say "hi",\r\nbye']
    assert [p.name for p in path.parent.iterdir()] == ["predictions.csv"]  # no temp file left behind


def test_predictions_csv_takes_input_from_the_first_model_that_has_the_item(tmp_path):
    item = {"task": "t", "doc_hash": None, "reference": "r", "metrics": {}}
    evaluation = make_evaluation(samples=[
        {**item, "label": "qa", "doc_id": "0", "prompt": "qa's prompt", "prediction": "qa0"},
        {**item, "label": "base", "doc_id": "0", "prompt": "base's prompt", "prediction": "base0"},
        {**item, "label": "qa", "doc_id": "1", "prompt": "only qa", "prediction": "qa1"},
    ])
    with open(exports.write_predictions_csv(evaluation, tmp_path / "p.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["input"], r["base"], r["qa"]) for r in rows] == [
        ("0", "base's prompt", "base0", "qa0"),  # base comes first in model order, whatever the sample order
        ("1", "only qa", "", "qa1"),
    ]
    assert "group" not in rows[0]  # no task has group_by


def test_format_evaluation_breaks_grouped_tasks_down_by_group(conn):
    evaluation = make_evaluation()
    for sample in evaluation["samples"]:
        if sample["task"] == "notes_mc" and sample["doc_id"] == "1":
            sample["group"] = "apply"
    text = views.format_evaluation(database.load_evaluation(conn, database.save_evaluation(conn, evaluation)))
    table = text.split("by group")[1].splitlines()
    assert table[1].split() == ["task", "group", "n", "metric", "base", "qa"]
    assert [line.split() for line in table[3:]] == [["notes_mc", "apply", "1", "acc", "1.0000", "1.0000"],
                                                    ["notes_mc", "recall", "1", "acc", "0.0000", "1.0000"]]
    ungrouped = database.save_evaluation(conn, make_evaluation(samples=[]))
    assert "by group" not in views.format_evaluation(database.load_evaluation(conn, ungrouped))


def test_format_evaluation_shows_every_model_task_and_metric(conn):
    loaded = database.load_evaluation(conn, database.save_evaluation(conn, make_evaluation()))
    text = views.format_evaluation(loaded)
    for word in (loaded["id"], "sample", "default", "base", "qa", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "notes_mc",
                 "acc", "bleu", "0.5000 ± 0.1000", "30.2500", " UTC"):
        assert word in text
    assert len({line.index("0.5000") for line in text.splitlines() if "0.5000" in line}) == 1


def test_format_evaluation_list_has_a_row_per_evaluation(conn):
    assert views.format_evaluation_list([]) == "no evaluations in the store"
    ids = [database.save_evaluation(conn, make_evaluation()) for _ in range(2)]
    text = views.format_evaluation_list(database.list_evaluations(conn))
    lines = text.splitlines()
    assert lines[0].split() == ["id", "date", "suite", "base", "models", "tasks"]
    assert len(lines) == 4 and all(i in text for i in ids) and "base, qa" in text


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    from adapterbench.atomic import atomic_file

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write("half of the new")
            raise RuntimeError("killed midway")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_file(target) as f:
        f.write("new")
    assert target.read_text() == "new"
