"""The plain-text views of evaluations in the terminal: one evaluation's models and scores (`eval`, `runs show`) and
the `runs list` table, and `generate`'s answers side by side."""

from __future__ import annotations

from datetime import datetime, timezone

from adapterbench import terminal
from adapterbench.harness.exports import scores_table
from adapterbench.record_types import Evaluation, EvaluationSummary


def format_evaluation(evaluation: Evaluation) -> str:
    """Header (id, date, suite, base, models with short sha) and a task x metric table, one column per model."""
    e = evaluation
    suite = e["suite"]["name"] + (f"  ({e['suite']['path']})" if e["suite"].get("path") else "")
    lines = [f"evaluation  {e['id']}" + (f"  ({e['kind']})" if e.get("kind", "eval") != "eval" else ""),
             f"date        {_date(e['created_at'])}", f"suite       {suite}", f"base        {e['base_ref']}"]
    if e.get("train_run") is not None:
        lines.append(f"train run   {e['train_run']}  step {e.get('step')}  tokens {e.get('tokens_seen')}")
    model_rows = [[m["label"], m["role"], (m.get("sha256") or "-")[:12], m.get("path") or ""] for m in e["models"]]
    for i, line in enumerate(terminal.align(model_rows)):
        lines.append(("models      " if i == 0 else " " * 12) + line)
    labels = [m["label"] for m in e["models"]]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for s in scores_table(e):
        cells.setdefault((s["task"], s["metric"]), {})[s["label"]] = _score(s["value"], s["stderr"])
    if cells:
        table = [["task", "metric", *labels]]
        table += [[task, metric, *(row.get(label, "-") for label in labels)] for (task, metric), row in cells.items()]
        lines += ["", *terminal.table(table, right=range(2, 2 + len(labels)))]
    else:
        lines += ["", "(no scores)"]
    groups = _group_rows(e, labels)
    if groups:
        lines += ["", "by group (each task's primary metric)", *terminal.table(groups, right=range(2, 4 + len(labels)))]
    return "\n".join(lines)


def _group_rows(evaluation: Evaluation, labels: list[str]) -> list[list[str]]:
    """For tasks with a group_by column: the primary metric per group and model, aggregated as the task aggregates
    it (corpus BLEU, macro F1...), with the group's item count."""
    from adapterbench.harness.compare import group_scores
    from adapterbench.task_types import primary_metric

    by_task: dict[str, dict[str, list[dict]]] = {}
    for s in evaluation["samples"]:
        if s.get("group") is not None:
            by_task.setdefault(s["task"], {}).setdefault(s["label"], []).append(s)
    rows = []
    for task, by_label in by_task.items():
        sampled = {m for samples in by_label.values() for s in samples for m in s["metrics"]}
        scored = [r["metric"] for r in evaluation["scores"] if r["task"] == task and r["metric"] in sampled]
        if not scored:
            continue
        metric = primary_metric(scored)
        for row in sorted(group_scores(by_label, [metric]), key=lambda r: r["group"]):
            rows.append([task, row["group"], str(row["n"]), metric,
                         *(_score(row["values"].get(label, {}).get(metric), None) for label in labels)])
    return [["task", "group", "n", "metric", *labels], *rows] if rows else []


def format_evaluation_list(rows: list[EvaluationSummary]) -> str:
    """The `runs list` table: id, date, suite, base, models, tasks (and kind when rows of several kinds are listed)."""
    if not rows:
        return "no evaluations in the store"
    kinds = any(r.get("kind", "eval") != "eval" for r in rows)  # a kind column only when the list mixes kinds
    table = [["id", "date", "suite", "base", "models", "tasks", *(["kind"] if kinds else [])]]
    table += [[r["id"], _date(r["created_at"]), r["suite_name"], r["base_ref"], ", ".join(r["models"]),
               str(r["n_tasks"]), *([r.get("kind", "eval")] if kinds else [])] for r in rows]
    return "\n".join(terminal.table(table, right={5}))


def _date(created_at: str) -> str:
    try:
        return f"{datetime.fromisoformat(created_at).astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    except (TypeError, ValueError):
        return str(created_at)


def _score(value, stderr) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}"
    return text if stderr is None else f"{text} ± {stderr:.4f}"


def format_answers(evaluation: Evaluation, width: int = 100) -> str:
    """Each prompt, then every model's answer under its label (and the reference when the file gave one)."""
    by_item: dict[str, dict] = {}
    for s in evaluation["samples"]:
        by_item.setdefault(s["doc_id"], {"prompt": s["prompt"], "reference": s["reference"], "answers": {}})
        by_item[s["doc_id"]]["answers"][s["label"]] = s["prediction"]
    labels = [m["label"] for m in evaluation["models"]]
    pad = max(len(label) for label in [*labels, "reference"])
    lines = []
    for doc_id, item in by_item.items():
        lines += ["=" * min(width, 60), f"[{doc_id}] {item['prompt']}"]
        if item["reference"]:
            lines.append(f"  {'reference':<{pad}} | {item['reference']}")
        for label in labels:
            text = " ".join((item["answers"].get(label) or "").split())
            lines.append(f"  {label:<{pad}} | {text}")
    return "\n".join(lines)
