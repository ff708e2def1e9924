"""Everything a report shows, gathered into one plain dict: models and their identity, the main table (intervals,
paired deltas against a reference), per-task detail, answers side by side, learning curves, leakage, environment.
Numbers stay numbers: formatting belongs to the templates."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from adapterbench import task_types
from adapterbench.errors import UserError
from adapterbench.task_types.generation import ITEM_MARGIN as GEN_MARGIN, ROUGE_PARTS, ROUGE_TYPES

Z95 = 1.959964  # a score's 95 % interval is value +- Z95 * stderr (normal approximation)
ALPHA = 0.05  # a delta is marked significant when its Holm-adjusted p-value is below this


def build_context(evaluations: list[dict], train_runs=(), *, reference: str | None = None, max_answers: int = 10,
                  command: str | None = None, iters: int = 2000, seed: int = 0) -> dict:
    """The report's content. `evaluations` as `database.load_evaluation` returns them (with samples); `train_runs`:
    training run dirs; `reference`: the model deltas are taken against (a label, `EVAL_ID:LABEL`, or by default the
    first evaluation's base); `max_answers`: the cap on answers shown per list."""
    if max_answers < 0:
        raise UserError(f"max answers must be >= 0, got {max_answers}", field="--max-answers")
    models = _models(evaluations)
    scored = [m for m in models if any(s["label"] == m["label"] for s in m["evaluation"]["scores"])]
    ref = _reference_model(scored, reference)
    suite_notes: list[str] = []
    suites = {e["suite"].get("path"): _load_suite(e["suite"].get("path"), suite_notes) for e in evaluations}
    suite_types = {t.name: t.type for suite in suites.values() if suite for t in suite.tasks}
    task_labels = {t.name: list(t.labels) for suite in suites.values() if suite for t in suite.tasks if t.labels}
    comparisons = _comparisons(ref, scored, iters=iters, seed=seed)
    table = _main_table(scored, ref, comparisons)
    tasks = _tasks(models, scored, ref, table, suite_types, task_labels, max_answers)
    runs = [_read_run(path) for path in train_runs]
    return {
        "title": _title(evaluations, runs),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "report_command": command,
        "alpha": ALPHA, "gen_margin": GEN_MARGIN, "max_answers": max_answers,
        "evaluations": [_evaluation_summary(e) for e in evaluations],
        "models": [{k: v for k, v in m.items() if k != "evaluation"} for m in models],
        "scored": [m["key"] for m in scored],
        "reference": ref["key"] if ref else None,
        "candidates": [m["key"] for m in scored if ref and m["key"] != ref["key"]],
        "comparison_notes": [*suite_notes, *(note for c in comparisons.values() for note in c["notes"])],
        "table": table,
        "tasks": tasks,
        "training": _training(runs),
        "leakage": [row for suite in suites.values() if suite for row in _leakage(suite)],
    }


# --- models ------------------------------------------------------------------------------------------------------

def _models(evaluations: list[dict]) -> list[dict]:
    """Every model of every evaluation, keyed by its label, or `SUFFIX:label` where a label recurs across
    evaluations (SUFFIX: the evaluation id's random tail, or the whole id if tails collide)."""
    counts: dict[str, int] = {}
    for e in evaluations:
        for m in e["models"]:
            counts[m["label"]] = counts.get(m["label"], 0) + 1
    tails = [e["id"].rsplit("-", 1)[-1] for e in evaluations]
    models = []
    for e, tail in zip(evaluations, tails):
        prefix = tail if tails.count(tail) == 1 else e["id"]
        for m in e["models"]:
            key = m["label"] if counts[m["label"]] == 1 else f"{prefix}:{m['label']}"
            models.append({"key": key, "label": m["label"], "role": m["role"], "eval_id": e["id"],
                           "kind": e.get("kind", "eval"), "path": m.get("path"), "sha256": m.get("sha256"),
                           "base_name": m.get("base_name"), "training": _training_summary(m.get("manifest")),
                           "evaluation": e})
    return models


def _reference_model(scored: list[dict], reference: str | None) -> dict | None:
    if reference is None:
        return next((m for m in scored if m["role"] == "base"), scored[0] if scored else None)
    eval_ref, sep, label = reference.rpartition(":")
    for m in scored:
        if reference == m["key"] or (not sep and reference == m["label"]) or (
                sep and label == m["label"] and eval_ref and m["eval_id"].startswith(eval_ref)):
            return m
    known = ", ".join(m["key"] for m in scored) or "(no scored models)"
    raise UserError(f"no scored model '{reference}' among the evaluations; models: {known}", field="--reference")


def _training_summary(manifest: dict | None) -> list[tuple[str, object]] | None:
    """The few facts of a training run that tell adapters apart, from its manifest.json."""
    if not manifest:
        return None
    config, stats, best = manifest.get("config") or {}, manifest.get("stats") or {}, manifest.get("best") or {}
    lora = config.get("lora") or {}
    train = ((manifest.get("data") or {}).get("train") or {})
    rows = [("LoRA", ", ".join(f"{k}={lora[k]}" for k in ("r", "alpha", "dropout") if lora.get(k) is not None)
             or None),
            ("target modules", lora.get("target_modules")),
            ("quantization", config.get("quant")),
            ("lr", config.get("lr")), ("scheduler", config.get("scheduler")),
            ("batch", f"{config.get('batch_size')} x {config.get('grad_accum')} accumulation"
             if config.get("batch_size") else None),
            ("steps", f"{stats.get('steps')} of {stats.get('planned_steps')}" if stats.get("steps") is not None
             else None),
            ("tokens seen", stats.get("tokens_seen")),
            ("best", f"step {best.get('step')}: {best.get('metric')} = {best.get('value'):.4g}"
             if isinstance(best.get("value"), (int, float)) else None),
            ("train data", f"{Path(str(train['path'])).name} (sha256 {str(train.get('sha256'))[:12]})"
             if train.get("path") else None),
            ("seed", manifest.get("seed", config.get("seed"))),
            ("git commit", str(manifest["git_commit"])[:12] if manifest.get("git_commit") else None)]
    return [(k, v) for k, v in rows if v is not None]


# --- scores and deltas ---------------------------------------------------------------------------------------------

def _comparisons(ref: dict | None, scored: list[dict], *, iters: int, seed: int) -> dict[str, dict]:
    """Per candidate key: {rows: {(task, metric): compare row}, notes: [...]}, from the paired comparison."""
    from adapterbench.harness.compare import compare

    out = {}
    for m in scored:
        if ref is None or m["key"] == ref["key"]:
            continue
        result = compare(ref["evaluation"], ref["label"], m["evaluation"], m["label"], iters=iters, seed=seed)
        notes = [f"{task}: {n['only_baseline']} item(s) only {ref['key']} answered and {n['only_candidate']} only "
                 f"{m['key']} answered are left out of the paired comparison"
                 for task, n in (result.get("unmatched") or {}).items() if n["only_baseline"] or n["only_candidate"]]
        out[m["key"]] = {"rows": {(r["task"], r["metric"]): r for r in result["rows"]}, "notes": notes}
    return out


def _scores_by_key(scored: list[dict]) -> dict[str, dict[tuple[str, str], dict]]:
    return {m["key"]: {(s["task"], s["metric"]): s for s in m["evaluation"]["scores"] if s["label"] == m["label"]}
            for m in scored}


def _main_table(scored: list[dict], ref: dict | None, comparisons: dict) -> list[dict]:
    """One row per (task, metric) in first-seen order: each model's value with its interval, the best marked, and
    each candidate's paired delta against the reference (None where no interval exists)."""
    by_key = _scores_by_key(scored)
    order = list(dict.fromkeys(k for scores in by_key.values() for k in scores))
    rows = []
    for task, metric in order:
        declared = task_types.metric(metric)
        hib = declared.higher_is_better
        values = {}
        for key, scores in by_key.items():
            s = scores.get((task, metric))
            values[key] = None if s is None else _interval(s)
        finite = {k: v["value"] for k, v in values.items() if v and _is_finite(v["value"])}
        top = (max if hib else min)(finite.values()) if finite else None
        # No mark where every model ties: "best" would say nothing.
        best = [k for k, v in finite.items() if v == top] if len(set(finite.values())) > 1 else []
        deltas = {}
        for key, c in comparisons.items():
            row = c["rows"].get((task, metric))
            deltas[key] = _delta_cell(row, hib) if row else None
        rows.append({"task": task, "metric": metric, "higher_is_better": hib, "detail": declared.detail,
                     "values": values, "best": best, "deltas": deltas})
    return rows


def _interval(score: dict) -> dict:
    value, stderr = score["value"], score.get("stderr")
    half = Z95 * stderr if stderr is not None and _is_finite(value) else None
    return {"value": value, "stderr": stderr, "half": half, "n": score.get("n"),
            "low": None if half is None else value - half, "high": None if half is None else value + half}


def _delta_cell(row: dict, hib: bool) -> dict | None:
    # "A delta without its interval is not reported": a row without one shows as missing.
    if row.get("ci_low") is None or row.get("ci_high") is None or not _is_finite(row.get("delta")):
        return None
    p = row.get("p_holm", row.get("p_value"))
    significant = p is not None and p < ALPHA
    mde = row.get("mde")
    return {"delta": row["delta"], "low": row["ci_low"], "high": row["ci_high"], "p_value": row.get("p_value"),
            "p_holm": row.get("p_holm"), "test": row.get("test"), "n_items": row.get("n_items"),
            "significant": significant, "mde": mde if _is_finite(mde) else None,
            # Newcombe's interval is not McNemar's inversion, nor the bootstrap's the permutation test's: an
            # interval excluding 0 on a row the test does not call significant gets a mark and the reason.
            "disagrees": not significant and (row["ci_low"] > 0 or row["ci_high"] < 0),
            "direction": 0 if not significant or row["delta"] == 0 else (1 if (row["delta"] > 0) == hib else -1)}


# --- per task ------------------------------------------------------------------------------------------------------

def _task_type(task: str, metrics: set[str], suite_types: dict) -> task_types.TaskType | None:
    """The task's type: as its suite declares it, else as its metric names tell (the suite file may be gone)."""
    if task in suite_types:
        return task_types.task_type(suite_types[task])
    return task_types.type_of(metrics)


def _tasks(models, scored, ref, table, suite_types, task_labels, max_answers) -> list[dict]:
    names = list(dict.fromkeys([r["task"] for r in table] + [s["task"] for m in models
                                                             for s in m["evaluation"]["samples"]]))
    by_key = _scores_by_key(scored)
    samples = {m["key"]: {} for m in models}
    for m in models:
        for s in m["evaluation"]["samples"]:
            if s["label"] == m["label"]:
                samples[m["key"]].setdefault(s["task"], []).append(s)
    out = []
    for task in names:
        metrics = {metric for scores in by_key.values() for (t, metric) in scores if t == task}
        kinds = {m["kind"] for m in models if task in samples[m["key"]]}
        # `adapterbench generate` answers have no type and no scores: shown side by side
        declared = None if kinds == {"generate"} else _task_type(task, metrics, suite_types)
        type_name = "generate" if kinds == {"generate"} else declared.name if declared else "other"
        present = [m for m in models
                   if task in samples[m["key"]] or any(t == task for t, _ in by_key.get(m["key"], {}))]
        out.append({
            "name": task, "type": type_name,
            "models": [m["key"] for m in present],
            "n": {m["key"]: len(samples[m["key"]].get(task, ())) for m in present},
            "rouge": _rouge(task, by_key) if declared and declared.detail == "rouge" else None,
            "classification": _classification(task, samples, task_labels.get(task))
            if declared and declared.detail == "classification" else None,
            "unparseable": {k: scores[(task, "unparseable_rate")]["value"] for k, scores in by_key.items()
                            if (task, "unparseable_rate") in scores} or None,
            "groups": _groups(task, samples, [r["metric"] for r in table if r["task"] == task and not r["detail"]]),
            "answers": _answers(task, present, samples, ref, max_answers, declared)
            if type_name == "generate" or (declared and declared.answers) else None,
        })
    return out


def _rouge(task: str, by_key: dict) -> dict | None:
    """ROUGE precision/recall/F1 per model: {key: {rouge type: {precision, recall, f1}}}."""
    values = {}
    for key, scores in by_key.items():
        table = {t: {part: scores[(task, f"{t}_{part}")]["value"] for part in ROUGE_PARTS
                     if (task, f"{t}_{part}") in scores} for t in ROUGE_TYPES}
        table = {t: parts for t, parts in table.items() if parts}
        if table:
            values[key] = table
    return {"types": [t for t in ROUGE_TYPES if any(t in v for v in values.values())], "values": values} \
        if values else None


def _classification(task: str, samples: dict, labels: list[str] | None) -> dict | None:
    """Per model: accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix,
    from the per-sample (gold, pred) items. Labels from the suite, else the metric names' slugs, else indices."""
    from adapterbench.task_types.classification import label_slugs
    from adapterbench.tasks.metrics import classification_report

    reports = {}
    for key, tasks in samples.items():
        items = [s["metrics"]["f1_macro"] for s in tasks.get(task, ()) if "f1_macro" in s["metrics"]]
        if not items:
            continue
        golds, preds = [int(g) for g, _ in items], [int(p) for _, p in items]
        n_labels = max(golds + preds) + 1
        names = labels if labels and len(labels) >= n_labels else label_slugs(tasks[task][0]["metrics"])
        if len(names) < n_labels:
            names = [str(i) for i in range(n_labels)]
        reports[key] = classification_report(golds, preds, names)
    return reports or None


def _groups(task: str, samples: dict, metrics: list[str]) -> dict | None:
    """Scores per sample group (a data column named by the suite's group_by), when the task's samples carry one."""
    from adapterbench.harness.compare import group_scores

    by_key = {key: tasks.get(task, []) for key, tasks in samples.items()}
    grouped = [s for ss in by_key.values() for s in ss if s.get("group") is not None]
    if not grouped:
        return None
    metrics = [m for m in metrics if any(m in s["metrics"] for s in grouped)]
    return {"metrics": metrics, "rows": group_scores(by_key, metrics)}


def _answers(task: str, present: list[dict], samples: dict, ref: dict | None, max_answers: int,
             declared: task_types.TaskType | None) -> dict | None:
    """Items side by side (prompt, reference, each model's answer and its per-item score), paired by doc_hash,
    with the items each model fixed or broke relative to the reference: those whose score, the type's item_score,
    moved by at least its item_margin."""
    items: dict[str, dict] = {}
    metric = declared.item_score if declared else None
    for m in present:
        for s in samples[m["key"]].get(task, ()):
            item = items.setdefault(s.get("doc_hash") or str(s["doc_id"]), {
                "doc_id": str(s["doc_id"]), "prompt": s.get("prompt") or "", "reference": s.get("reference"),
                "group": s.get("group"), "answers": {}})
            score = s["metrics"].get(metric) if metric else None
            item["answers"][m["key"]] = {"prediction": s.get("prediction") or "",
                                         "score": float(score) if _is_finite(score) else None}
    if not items:
        return None
    ordered = list(items.values())
    prefix, suffix = _common_affixes([it["prompt"] for it in ordered])
    for it in ordered:
        it["prompt_core"] = it["prompt"][len(prefix):len(it["prompt"]) - len(suffix)]
    changes = {}
    ref_key = ref["key"] if ref else None
    for m in present:
        if ref_key is None or m["key"] == ref_key:
            continue
        moved = []
        for it in ordered:
            a, b = it["answers"].get(ref_key), it["answers"].get(m["key"])
            if a and b and a["score"] is not None and b["score"] is not None:
                moved.append((b["score"] - a["score"], it))
        margin = declared.item_margin if declared else math.inf  # no type: no per-item score to move
        fixed = sorted((d for d in moved if d[0] >= margin), key=lambda d: -d[0])
        broken = sorted((d for d in moved if d[0] <= -margin), key=lambda d: d[0])
        changes[m["key"]] = {"n_compared": len(moved), "n_fixed": len(fixed), "n_broken": len(broken),
                             "fixed": [it for _, it in fixed[:max_answers]],
                             "broken": [it for _, it in broken[:max_answers]]}
    return {"n": len(ordered), "score_metric": metric,
            "binary_score": bool(metric) and task_types.metric(metric).binary, "prompt_prefix": prefix,
            "prompt_suffix": suffix, "shown": ordered[:max_answers], "changes": changes or None}


def _common_affixes(prompts: list[str]) -> tuple[str, str]:
    """The text every prompt starts and ends with (a system prompt, a chat template's markers), so each answer
    shows only what differs: the prefix cut after a line break, the suffix from a line break or a "<" on (where
    chat markers such as <|im_end|> begin)."""
    if len(prompts) < 2:
        return "", ""
    first, last = min(prompts), max(prompts)
    n = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    prefix = first[:first.rfind("\n", 0, n) + 1]
    rest = [p[len(prefix):] for p in prompts]
    lo, hi = min(p[::-1] for p in rest), max(p[::-1] for p in rest)
    m = next((i for i, (a, b) in enumerate(zip(lo, hi)) if a != b), min(len(lo), len(hi)))
    common = lo[:m][::-1]
    start = next((i for i, ch in enumerate(common) if ch in "\n<"), len(common))
    suffix = common[start:]
    if any(not p[:len(p) - len(suffix)].strip() for p in rest):
        return prefix, ""
    return prefix, suffix


# --- training runs -------------------------------------------------------------------------------------------------

def _read_run(path) -> dict:
    """A training run dir: its manifest (may be absent while it trains) and learning curve (metrics.jsonl)."""
    path = Path(path)
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise UserError("not a training run dir (no metrics.jsonl)", path=path, field="--train-run")
    from adapterbench.datafiles.reading import jsonl_objects

    train, evals = [], []
    for n, row in jsonl_objects(metrics_path):
        if not isinstance(row.get("step"), (int, float)):
            raise UserError("expected a JSON object with a numeric 'step'", path=metrics_path, line=n)
        (evals if row.get("kind") == "eval" else train).append(row)
    manifest = None
    if (path / "manifest.json").is_file():
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON ({err.msg})", path=path / "manifest.json", line=err.lineno) from None
    return {"path": str(path), "name": path.resolve().name, "manifest": manifest, "train": train, "evals": evals,
            "config": _dotted_keys((manifest or {}).get("config") or {})}


def _dotted_keys(config: dict, prefix: str = "") -> dict:
    """A nested config as one level: {"lora": {"r": 8}} -> {"lora.r": 8}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_dotted_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


SUMMARY_KEYS = ("lora.r", "lora.alpha", "lr", "batch_size", "max_steps")


def _training(runs: list[dict]) -> dict | None:
    """Runs named by their dir and what sets their configs apart; charts of loss and task metrics over steps."""
    if not runs:
        return None
    names = [r["name"] for r in runs]
    for r in runs:
        if names.count(r["name"]) > 1:
            r["name"] = f"{Path(r['path']).resolve().parent.name}/{r['name']}"
    keys = list(dict.fromkeys(k for r in runs for k in r["config"]))
    # The output dir always differs and is the run's name already.
    differing = [k for k in keys
                 if k != "out" and len({json.dumps(r["config"].get(k), default=str) for r in runs}) > 1]
    shown = differing if len(runs) > 1 else [k for k in SUMMARY_KEYS if k in keys]
    summaries = []
    for i, r in enumerate(runs):
        m = r["manifest"] or {}
        evals = r["evals"]
        metric_keys = list(dict.fromkeys(k for e in evals for k in e if k == "val_loss" or (
            "/" in k and not task_types.metric(k.split("/", 1)[1]).detail)))
        summaries.append({
            "index": i, "name": r["name"], "path": r["path"],
            "params": [(k, r["config"].get(k)) for k in shown],
            "steps": (m.get("stats") or {}).get("steps", max((row["step"] for row in r["train"]), default=None)),
            # a run that no evaluation ranked (no validation set, no early-stopping metric) has no best step
            "best": m.get("best") if (m.get("best") or {}).get("step") is not None else None,
            "finished": bool(m.get("stats")),
            "last_train_loss": next((row["train_loss"] for row in reversed(r["train"]) if "train_loss" in row), None),
            "metrics": [{"name": k, "first": next((e[k] for e in evals if k in e), None),
                         "last": next((e[k] for e in reversed(evals) if k in e), None)} for k in metric_keys],
        })
    charts = [{"title": "loss", "y_label": "loss", "lower_is_better": True, "series": [
        *({"run": i, "name": f"{r['name']} train", "style": "train",
           "points": [(row["step"], row["train_loss"]) for row in r["train"] if _is_finite(row.get("train_loss"))]}
          for i, r in enumerate(runs)),
        *({"run": i, "name": f"{r['name']} val", "style": "eval",
           "points": [(row["step"], row["val_loss"]) for row in r["evals"] if _is_finite(row.get("val_loss"))]}
          for i, r in enumerate(runs))]}]
    by_task: dict[str, list[str]] = {}
    for r in runs:
        for e in r["evals"]:
            for k in e:
                if "/" in k:
                    by_task.setdefault(k.split("/", 1)[0], []).append(k.split("/", 1)[1])
    for task, names in by_task.items():
        metric = task_types.primary_metric(dict.fromkeys(names))
        key = f"{task}/{metric}"
        charts.append({"title": key, "y_label": metric, "lower_is_better": not task_types.higher_is_better(metric),
                       "series": [{"run": i, "name": r["name"], "style": "eval",
                                   "points": [(e["step"], e[key]) for e in r["evals"] if _is_finite(e.get(key))]}
                                  for i, r in enumerate(runs)]})
    for chart in charts:
        chart["series"] = [s for s in chart["series"] if s["points"]]
    return {"runs": summaries, "differing": differing, "charts": [c for c in charts if c["series"]]}


# --- data and environment ------------------------------------------------------------------------------------------

def _load_suite(path, notes: list[str]):
    """The suite file the evaluation ran, when it is still there and valid (labels, task types, data files); one
    that no longer loads adds a note saying why, since the report then guesses task types from metric names."""
    from adapterbench.config import load_suite

    if not path or not Path(path).is_file():
        return None
    try:
        return load_suite(path)
    except UserError as err:
        notes.append(f"the suite file no longer loads ({err}): task types and labels are read from the stored "
                     "metric names, and its leakage reports are not shown")
        return None


def _leakage(suite) -> list[dict]:
    """For each task whose data is a `data split` output (NAME_test / NAME_val), the NAME_leakage.json beside it."""
    rows = []
    for task in suite.tasks:
        data = Path(task.data)
        match = re.fullmatch(r"(.+)_(test|val)", data.stem)
        report = data.with_name(f"{match.group(1)}_leakage.json") if match else None
        if report is None or not report.is_file():
            continue
        try:
            leak = json.loads(report.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        rows.append({"task": task.name, "data": data.name, "report": str(report), "ngram": leak.get("ngram"),
                     "n_heldout": leak.get("n_heldout"), "share_over_threshold": leak.get("share_over_threshold"),
                     "mean_shared_ngram_share": leak.get("mean_shared_ngram_share"),
                     "worst": (leak.get("worst") or [])[:3]})
    return rows


def _evaluation_summary(e: dict) -> dict:
    env = e.get("environment") or {}
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    return {"id": e["id"], "created_at": e.get("created_at"), "kind": e.get("kind", "eval"),
            "suite": e["suite"].get("name"), "suite_path": e["suite"].get("path"), "base_ref": e.get("base_ref"),
            "command": e.get("command") or "", "train_run": e.get("train_run"), "step": e.get("step"),
            "config": {k: v for k, v in (e.get("config") or {}).items() if not isinstance(v, (dict, list))},
            "environment": {k: v for k, v in env.items() if k != "packages"}, "packages": packages}


def _title(evaluations: list[dict], runs: list[dict]) -> str:
    if evaluations:
        suites = ", ".join(dict.fromkeys(e["suite"]["name"] for e in evaluations))
        return f"adapterbench report: {suites}"
    return "adapterbench report: " + ", ".join(r["name"] for r in runs)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
