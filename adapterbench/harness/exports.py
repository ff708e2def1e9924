"""Evaluations in the formats others read: lm-eval's output folder and results JSON, the predictions CSV, and the
`runs export` tables for pandas, spreadsheets or DuckDB."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from adapterbench import paths
from adapterbench.atomic import atomic_file, write_text
from adapterbench.errors import UserError
from adapterbench.escape import csv_cell
from adapterbench.record_types import Evaluation, ModelEntry, Score


def scores_table(evaluation: Evaluation) -> list[Score]:
    """Score rows (label, task, metric, value, stderr, n) by task, metric, then model order (base first)."""
    order = {m["label"]: i for i, m in enumerate(evaluation["models"])}
    rows = sorted(evaluation["scores"], key=lambda s: (s["task"], s["metric"], order[s["label"]]))
    return [Score(label=s["label"], task=s["task"], metric=s["metric"], value=s["value"], stderr=s.get("stderr"),
                  n=s.get("n")) for s in rows]


def export_lm_eval(evaluation: Evaluation, label: str) -> dict:
    """lm-eval's results JSON for one model, plus our identity of it under "adapterbench" (HFLM records only the
    base's name). Built from the scores in lm-eval's shape when lm-eval's own dict was not kept."""
    model = _model(evaluation, label)
    if model["lm_eval"] is not None:
        out = dict(model["lm_eval"])
    else:
        results: dict[str, dict] = {}
        n_samples: dict[str, dict] = {}
        for s in evaluation["scores"]:
            if s["label"] != label:
                continue
            name, _, filt = s["metric"].partition(",")
            filt = filt or "none"
            entry = results.setdefault(s["task"], {"alias": s["task"]})
            entry[f"{name},{filt}"] = s["value"]
            # lm-eval writes "N/A" where it has no standard error.
            entry[f"{name}_stderr,{filt}"] = "N/A" if s.get("stderr") is None else s["stderr"]
            if s.get("n") is not None:
                n_samples[s["task"]] = {"original": s["n"], "effective": s["n"]}
        out = {"results": results, "n-samples": n_samples}
    out["adapterbench"] = {"evaluation_id": evaluation["id"], "label": label, "role": model["role"],
                           "path": model["path"], "sha256": model["sha256"], "base_name": model["base_name"],
                           "manifest": model["manifest"]}
    return out


def write_lm_eval_dir(evaluation: Evaluation, folder: str | Path) -> None:
    """lm-eval's own output layout, so its tools and Zeno-style viewers read the evaluation: per model a folder
    named as lm-eval names one, holding results_DATE.json (export_lm_eval) and, while the evaluation still carries
    lm-eval's per-sample log (a fresh `eval`: the store does not keep it), samples_TASK_DATE.jsonl per task, each
    line as `lm_eval --log_samples` writes it (its EvaluationTracker.save_results_samples, 0.4.13)."""
    from lm_eval.utils import handle_non_serializable, sanitize_list, sanitize_model_name

    # lm-eval's date_id (its local time; ours the evaluation's, in UTC): tools pick the newest file by it
    date = datetime.fromisoformat(evaluation["created_at"]).replace(tzinfo=None).isoformat().replace(":", "-")
    for model in evaluation["models"]:
        model_dir = Path(folder) / sanitize_model_name(model["label"])
        write_text(model_dir / f"results_{date}.json", json.dumps(
            export_lm_eval(evaluation, model["label"]), indent=2, default=handle_non_serializable, ensure_ascii=False))
        for task, logged in (model.get("lm_eval_samples") or {}).items():
            with atomic_file(model_dir / f"samples_{task}_{date}.jsonl") as f:
                for sample in logged:
                    # arguments keyed and responses as text, as lm-eval writes them so that `datasets` loads the file
                    line = {**sample, "arguments": {f"gen_args_{i}": {f"arg_{j}": arg for j, arg in enumerate(args)}
                                                    for i, args in enumerate(sample["arguments"])},
                            "resps": sanitize_list(sample["resps"]),
                            "filtered_resps": sanitize_list(sample["filtered_resps"]), "target": str(sample["target"])}
                    f.write(json.dumps(line, default=handle_non_serializable, ensure_ascii=False) + "\n")


EXPORT_FORMATS = ("csv", "jsonl", "parquet")
# the columns of each `runs export` table; a samples row adds its per-sample metrics
EXPORT_COLUMNS = {"samples": ("evaluation_id", "label", "task", "doc_id", "doc_hash", "prompt", "prediction",
                              "reference", "group", "cluster"),
                  "scores": ("evaluation_id", "label", "role", "task", "metric", "value", "stderr", "n")}


def check_export(table: str, fmt: str, path: str | Path) -> None:
    """`runs export`'s choices and destination, checked before the store is read."""
    import importlib.util

    if table not in EXPORT_COLUMNS:
        raise UserError(f"unknown table {table!r}; choose {' or '.join(EXPORT_COLUMNS)}", field="--table")
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}", field="--format")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError("parquet needs pyarrow, which is not installed: pip install pyarrow", field="--format")
    paths.output_file(path, field="--out")


def export_rows(evaluation: Evaluation, table: str) -> list[dict]:
    """The rows of `runs export`, each naming its evaluation (exports of several evaluations concatenate): scores,
    one per model x task x metric; samples, one per model x task x item with its per-sample metrics (a dict)."""
    roles = {m["label"]: m["role"] for m in evaluation["models"]}
    items = scores_table(evaluation) if table == "scores" else evaluation["samples"]
    rows = []
    for item in items:
        row = {k: item.get(k) for k in EXPORT_COLUMNS[table]}
        row["evaluation_id"] = evaluation["id"]
        if table == "scores":
            row["role"] = roles[item["label"]]
        else:
            row["metrics"] = item["metrics"]
        rows.append(row)
    return rows


def write_export(evaluation: Evaluation, table: str, fmt: str, path: str | Path) -> int:
    """`export_rows` as JSONL (metrics nested), CSV or Parquet (a `metrics.NAME` column per metric, items that are
    not numbers as JSON text; CSV text cells escaped as in write_predictions_csv). Returns the row count."""
    rows = export_rows(evaluation, table)
    if fmt == "jsonl":
        with atomic_file(path) as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return len(rows)
    import pandas as pd

    flat = [{**{k: v for k, v in row.items() if k != "metrics"},
             **{f"metrics.{name}": value if isinstance(value, (int, float)) or value is None else json.dumps(value)
                for name, value in row.get("metrics", {}).items()}} for row in rows]
    if fmt == "csv":
        flat = [{k: csv_cell(v) if isinstance(v, str) else v for k, v in row.items()} for row in flat]
    columns = list(dict.fromkeys([*EXPORT_COLUMNS[table], *(k for row in flat for k in row)]))
    frame = pd.DataFrame(flat, columns=columns)
    with atomic_file(path, newline="", binary=fmt == "parquet") as f:
        if fmt == "csv":
            frame.to_csv(f, index=False)
        else:
            frame.to_parquet(f, index=False)
    return len(rows)


def write_predictions_csv(evaluation: Evaluation, path: str | Path) -> Path:
    """One row per (task, doc_id) in first-seen order: task, id, input, reference, the item's group (only when a
    task has group_by), then one prediction column per model in model order; input, reference and group come from
    the first model (in that order) that has the item."""
    path = Path(path)
    labels = [m["label"] for m in evaluation["models"]]
    items: dict[tuple[str, str], dict[str, dict]] = {}
    for s in evaluation["samples"]:
        items.setdefault((s["task"], str(s["doc_id"])), {})[s["label"]] = s
    grouped = any(s.get("group") is not None for s in evaluation["samples"])
    with atomic_file(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(map(csv_cell, ["task", "id", "input", "reference", *(["group"] if grouped else []), *labels]))
        for (task, doc_id), by_label in items.items():
            first = next(by_label[label] for label in labels if label in by_label)
            writer.writerow(map(csv_cell, [task, doc_id, first.get("prompt"), first.get("reference"),
                                            *([first.get("group")] if grouped else []),
                                            *(by_label.get(label, {}).get("prediction") for label in labels)]))
    return path


def _model(evaluation: Evaluation, label: str) -> ModelEntry:
    for model in evaluation["models"]:
        if model["label"] == label:
            return model
    raise UserError(f"evaluation {evaluation['id']} has no model '{label}'; its models: "
                    f"{', '.join(m['label'] for m in evaluation['models'])}", field="model")
