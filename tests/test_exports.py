"""Results in the formats others read: `eval --output-dir` writes the folder `lm_eval --output_path --log_samples`
writes for the same tasks (file names, one line per document with the same keys and values, loadable by `datasets`
as lm-eval intends), and `runs export` writes the store's scores and per-sample records as CSV, JSONL and Parquet
that pandas reads back unchanged."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from adapterbench.cli import main
from adapterbench.config import load_suite
from adapterbench.harness import database, exports
from adapterbench.harness.evaluate import evaluate
from test_harness import LIMIT, SUITE

FLOAT_ANSWERS = ("resps", "filtered_resps")  # log-likelihoods: ours equal HFLM's to float32 rounding, not bitwise


def lm_eval_output(model_dir: Path, suite_file: Path, task_dir: Path, out: Path) -> None:
    """What `lm_eval --model hf --include_path TASKS --output_path OUT --log_samples` writes, as its CLI writes it
    (the chat tasks and the plain ones in two runs, as they need different --apply_chat_template)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from adapterbench.tasks.compile import build_suite

    build_suite(load_suite(suite_file), task_dir)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    for chat in (True, False):
        tracker = EvaluationTracker(output_path=str(out))
        names = [t.name for t in load_suite(suite_file).tasks if t.chat_template == chat]
        results = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=names,
                                  task_manager=manager, limit=LIMIT, batch_size=32, device="cpu",
                                  apply_chat_template=chat, log_samples=True, bootstrap_iters=0,
                                  evaluation_tracker=tracker)
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])


def numbers(value):
    """A response as lm-eval writes it (text), with the numbers in it parsed: ['-3.25', 'False'] -> [-3.25, 'False']."""
    if isinstance(value, list):
        return [numbers(v) for v in value]
    try:
        return float(value)
    except ValueError:
        return value


def close(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b))
    return a == b


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(SUITE)
    return path


def test_output_dir_holds_the_folder_lm_eval_log_samples_writes(tiny_model_dir, suite_file, tmp_path):
    from datasets import Dataset
    from lm_eval.utils import get_file_datetime, get_results_filenames, get_sample_results_filenames

    ours = evaluate(suite_file, base=str(tiny_model_dir), limit=LIMIT, dtype="fp32", save=False)
    exports.write_lm_eval_dir(ours, tmp_path / "ours")
    lm_eval_output(tiny_model_dir, suite_file, tmp_path / "tasks", tmp_path / "lm_eval")
    (reference_dir,) = (tmp_path / "lm_eval").iterdir()  # lm-eval's folder for the model, named after its path

    def layout(folder: Path) -> dict[str, Path]:
        """{task or 'results': file}, found the way lm-eval's own tools find them (newest file per kind)."""
        files = [str(p) for p in folder.iterdir()]
        found = {Path(f).name.removeprefix("samples_").rsplit("_", 1)[0]: Path(f)
                 for f in get_sample_results_filenames(files)}
        found["results"] = Path(max(get_results_filenames(files), key=get_file_datetime))
        return found

    ours_files, reference_files = layout(tmp_path / "ours" / "base"), layout(reference_dir)
    tasks = [t.name for t in load_suite(suite_file).tasks]
    assert ours_files.keys() == reference_files.keys() == {*tasks, "results"}
    # one evaluation, one date (lm-eval's get_file_datetime strips .jsonl only)
    assert len({get_file_datetime(p.name).removesuffix(".json") for p in ours_files.values()}) == 1
    assert json.loads(ours_files["results"].read_text())["results"].keys() == set(tasks)
    for task in tasks:
        mine = [json.loads(line) for line in ours_files[task].read_text().splitlines()]
        theirs = [json.loads(line) for line in reference_files[task].read_text().splitlines()]
        assert len(mine) == len(theirs) == LIMIT, task
        for a, b in zip(mine, theirs):
            assert a.keys() == b.keys(), task
            assert {k: v for k, v in a.items() if k not in FLOAT_ANSWERS and not isinstance(v, float)} == {
                k: v for k, v in b.items() if k not in FLOAT_ANSWERS and not isinstance(v, float)}, task
            assert all(close(numbers(a[k]), numbers(b[k])) for k in FLOAT_ANSWERS), (task, a["resps"], b["resps"])
            assert all(close(a[k], b[k]) for k, v in b.items() if isinstance(v, float)), task
        # lm-eval writes the lines so that `datasets` loads them (it does so to show and upload them)
        assert Dataset.from_json(str(ours_files[task])).features == Dataset.from_json(
            str(reference_files[task])).features, task


def stored(tmp_path: Path) -> tuple[Path, dict]:
    """A store holding one evaluation whose records carry what exports must keep: a formula-like answer, non-ASCII
    text, a corpus metric's item (a list), a missing stderr and a NaN score."""
    samples = [{"label": label, "task": "qa", "doc_id": f"q{i}", "doc_hash": f"h{i}", "prompt": f"Вопрос {i}?",
                "prediction": "=HYPERLINK(\"http://x\")" if i == 0 else f"Answer {i}", "reference": f"Ответ {i}",
                "metrics": {"exact_match": float(i % 2), "bleu": [f"Ответ {i}", f"Answer {i}"]},
                "group": "g" if i else None, "cluster": None}
               for label in ("base", "qa") for i in range(3)]
    evaluation = {"id": "ev-20260101-000000-0123456789abcdef", "suite": {"name": "s", "path": None},
                  "base_ref": "default", "config": {}, "command": "adapterbench eval", "environment": {},
                  "models": [{"label": "base", "role": "base"}, {"label": "qa", "role": "adapter"}],
                  "scores": [{"label": label, "task": "qa", "metric": metric, "value": value, "stderr": stderr, "n": 3}
                             for label in ("base", "qa") for metric, value, stderr in
                             (("exact_match", 1 / 3, 0.33), ("bleu", math.nan, None))],
                  "samples": samples}
    path = tmp_path / "store.sqlite"
    with database.connect(path) as conn:
        database.save_evaluation(conn, evaluation)
    conn.close()
    return path, evaluation


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_runs_export_writes_the_stored_samples_and_scores_that_pandas_reads_back(tmp_path, capsys, fmt):
    import pandas as pd

    db, evaluation = stored(tmp_path)
    read = {"csv": lambda p: pd.read_csv(p, keep_default_na=False, na_values=[""]),
            "jsonl": lambda p: pd.read_json(p, lines=True, dtype=False, precise_float=True),
            "parquet": pd.read_parquet}[fmt]
    for table in ("samples", "scores"):
        out = tmp_path / f"{table}.{fmt}"
        with pytest.raises(SystemExit) as exit_:
            main(["runs", "export", evaluation["id"][:12], "--format", fmt, "--table", table, "--out", str(out),
                  "--store", str(db)])
        assert exit_.value.code == 0 and f"wrote {len(evaluation[table])} {table} rows" in capsys.readouterr().out
        frame = read(out)
        assert (frame["evaluation_id"] == evaluation["id"]).all()
        if table == "scores":
            assert list(frame.columns) == list(exports.EXPORT_COLUMNS["scores"])
            got = {(r.label, r.role, r.metric): (r.value, r.stderr) for r in frame.itertuples()}
            roles = {"base": "base", "qa": "adapter"}
            for s in evaluation["scores"]:
                value, stderr = got[(s["label"], roles[s["label"]], s["metric"])]
                assert (math.isnan(value) if math.isnan(s["value"]) else value == s["value"]), s
                assert (pd.isna(stderr) if s["stderr"] is None else stderr == s["stderr"]), s
            continue
        assert list(frame.columns)[:10] == list(exports.EXPORT_COLUMNS["samples"])
        rows = frame.to_dict("records")
        assert len(rows) == len(evaluation["samples"])
        for row, s in zip(rows, evaluation["samples"]):
            formula = fmt == "csv" and s["prediction"].startswith("=")  # spreadsheets would run it: shown as text
            assert row["prediction"] == ("'" + s["prediction"] if formula else s["prediction"])
            assert (row["label"], row["doc_id"], row["prompt"], row["reference"]) == (
                s["label"], s["doc_id"], s["prompt"], s["reference"])
            assert (pd.isna(row["group"]) if s["group"] is None else row["group"] == s["group"])
            metrics = row["metrics"] if fmt == "jsonl" else {
                "exact_match": row["metrics.exact_match"], "bleu": json.loads(row["metrics.bleu"])}
            assert metrics == s["metrics"]


def test_parquet_without_pyarrow_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    db, evaluation = stored(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exit_:
        main(["runs", "export", "latest", "--format", "parquet", "--out", str(tmp_path / "s.parquet"),
              "--store", str(db)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err == ("error: field '--format': parquet needs pyarrow, which is not "
                                             "installed: pip install pyarrow")
    assert not (tmp_path / "s.parquet").exists()
